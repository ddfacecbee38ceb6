/* alloc.c -- the Lua heap on transparent huge pages: an allocator that wraps a
 * state's own and asks the kernel (madvise MADV_HUGEPAGE) to back the memory
 * it hands out with 2 MB pages, so that fork -- pool start, replacement
 * workers -- copies one page-table entry per 2 MB of the heap instead of 512.
 * SPDX-License-Identifier: MIT */
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "compat.h"
#include "alloc.h"

#define HUGE_PAGE ((uintptr_t)2 << 20)
/* Blocks at least this big get their own advice: glibc maps them with mmap. */
#define BIG_BLOCK ((size_t)1 << 20)
/* glibc grows its main heap (brk) by the request plus this much, so that each
 * growth brings whole 2 MB pages that nothing has touched when they are
 * advised: memory the kernel has already backed with 4 KB pages stays so.
 * glibc writes a chunk header into the first of them before the advice, and
 * each growth is a mapping of its own (measured: 32 MB steps leave about 94%
 * of a 400 MB heap on huge pages, 8 MB steps 71%). */
#define TOP_PAD (16 * (size_t)HUGE_PAGE)

/* The allocator wrapped, process-wide: one (f, ud) pair. A second state
 * with the same pair shares it; a state with another allocator is left
 * alone (there is no per-state place to keep a second pair without
 * allocating from it, which lua_close could not free). */
static struct {
    lua_Alloc f;
    void *ud;
} wrapped;
/* The end of the brk heap already advised (a page boundary), 0 before the
 * first advice. Atomic: states in several threads may share the wrapper;
 * a race only repeats an madvise. */
static _Atomic uintptr_t advised_brk;

static void advise(uintptr_t from, uintptr_t to)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    from = (from + page - 1) & ~(page - 1);
    if (to > from)
        (void)madvise((void *)from, to - from, MADV_HUGEPAGE); /* advice: failure changes nothing */
}

/* The whole 2 MB pages inside a block. */
static void advise_block(void *p, size_t n)
{
    uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(HUGE_PAGE - 1);
    if (b > a)
        advise(a, b);
}

static void *hp_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize >= BIG_BLOCK && ptr && nsize > osize) {
        /* A big block that grows (a table's array part doubling): a new
         * block, advised before anything touches it, and a copy. realloc
         * would move the old pages (mremap), which are 4 KB pages once
         * touched, and only the added part could get huge pages. */
        void *p = wrapped.f(wrapped.ud, NULL, 0, nsize);
        if (!p)
            return NULL;
        advise_block(p, nsize);
        memcpy(p, ptr, osize);
        (void)wrapped.f(wrapped.ud, ptr, osize, 0);
        return p;
    }
    void *p = wrapped.f(wrapped.ud, ptr, osize, nsize);
    if (!p)
        return p;
    if (nsize >= BIG_BLOCK) {
        /* glibc maps a big block with mmap and writes only its chunk
         * header, before the first 2 MB boundary: the rest is untouched. */
        advise_block(p, nsize);
        return p;
    }
    /* Small blocks come from the brk heap: advise what it grew by. sbrk(0)
     * reads glibc's cached break, no system call. */
    uintptr_t brk = (uintptr_t)sbrk(0);
    uintptr_t done = atomic_load_explicit(&advised_brk, memory_order_relaxed);
    if (brk > done && done != 0) {
        advise(done, brk);
        atomic_store_explicit(&advised_brk, brk, memory_order_relaxed);
    }
    return p;
}

/* "always" or "madvise" in the kernel's THP setting: advice can help. */
static int thp_usable(void)
{
    char s[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return 0;
    size_t n = fread(s, 1, sizeof s - 1, f);
    fclose(f);
    s[n] = '\0';
    return strstr(s, "[always]") || strstr(s, "[madvise]");
}

void mpe__alloc_hugepages(lua_State *L)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (f == hp_alloc)
        return;
    const char *env = getenv("MPE_HUGEPAGES");
    if (env && strcmp(env, "0") == 0)
        return;
    if (wrapped.f && (wrapped.f != f || wrapped.ud != ud))
        return;
    if (!wrapped.f) {
        if (!thp_usable())
            return;
        wrapped.f = f;
        wrapped.ud = ud;
        /* Process-wide, and it fixes glibc's mmap threshold at 128 KB
         * (mallopt turns the threshold's adjustment off). */
        mallopt(M_TOP_PAD, (int)TOP_PAD);
        uintptr_t brk = (uintptr_t)sbrk(0);
        atomic_store_explicit(&advised_brk, brk, memory_order_relaxed);
    }
    lua_setallocf(L, hp_alloc, NULL);
}
