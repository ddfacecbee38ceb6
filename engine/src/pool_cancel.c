/* pool_cancel.c -- withdrawing a pool job that no worker has started
 * (async:cancel), kept apart from pool.c so it can move into the job module.
 * SPDX-License-Identifier: MIT */
#include "pool.h"
#include "pool_api.h"

/* A job is withdrawn only if none of its items was ever cut into a chunk
 * (handed to a worker), none is waiting to be run again and none has an
 * outcome: then no worker runs any of it, no message for it will come, and
 * marking it cancelled makes the dispatcher skip it from now on (has_items).
 * The check and the mark are one step under the pool's lock, so the
 * dispatcher cannot hand out a chunk in between. */
int mpe__pool_job_withdraw(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    int ok = !j->cancelled && !j->released && j->cut == 0 && !j->redo && j->done == 0;
    if (ok)
        j->cancelled = 1;
    pthread_mutex_unlock(&p->mu);
    return ok;
}
