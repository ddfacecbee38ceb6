/* test_codec.c -- unit tests of the wire format (codec.c, lmpe_codec.c):
 * round trips of every kind of value and every error path of the decoder.
 * SPDX-License-Identifier: MIT */
#include <limits.h>
#include <math.h>
#include <fcntl.h>
#include "mpe.h"
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "lbuf.h"
#include "tharness.h"

/* ---- helpers ------------------------------------------------------------------- */

static lua_State *newstate(void)
{
    lua_State *L = luaL_newstate();
    MPE_ASSERT(L != NULL);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushcfunction(L, luaopen_mpe);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "mpe");
    lua_setfield(L, -2, "mpe");
    lua_pop(L, 2);
    /* Under LuaJIT numbers have no integer subtype: isint/isfloat say yes to
     * any number there. */
    lua_pushboolean(L, MPE_HAS_INTEGERS);
    lua_setglobal(L, "HAS_INT");
    if (luaL_dostring(L, "function isint(x) return type(x) == 'number' and\n"
                         "  (not HAS_INT or math.type(x) == 'integer') end\n"
                         "function isfloat(x) return type(x) == 'number' and\n"
                         "  (not HAS_INT or math.type(x) == 'float') end\n") != LUA_OK)
        MPE_FAIL("%s", lua_tostring(L, -1));
    return L;
}

/* Run Lua code; a failure fails the test with the message. */
static void run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        MPE_FAIL("lua error: %s\nin: %s", lua_tostring(L, -1), code);
    lua_settop(L, 0);
}

/* Run Lua code that must raise; returns the message (valid until L is closed
 * or the stack is cleared: it stays on the stack). */
static const char *run_err(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) == LUA_OK)
        MPE_FAIL("expected an error from: %s", code);
    const char *m = lua_tostring(L, -1);
    MPE_ASSERT(m != NULL);
    return m;
}

/* lua_pcall wrappers around the C API. */
static int p_encode(lua_State *L)
{
    mpe_buf *b = lua_touserdata(L, 2);
    const char *root = lua_tostring(L, 3);
    mpe_fds *fds = lua_touserdata(L, 4);
    lua_settop(L, 1);
    mpe__encode(L, 1, b, root, fds);
    if (lua_gettop(L) != 1)
        return luaL_error(L, "encode changed the stack: %d", lua_gettop(L));
    return 0;
}

static int p_decode(lua_State *L)
{
    mpe_rd *r = lua_touserdata(L, 1);
    mpe_fds *fds = lua_touserdata(L, 2);
    lua_settop(L, 0);
    mpe__decode(L, r, fds);
    if (lua_gettop(L) != 1)
        return luaL_error(L, "decode pushed %d values", lua_gettop(L));
    return 1;
}

/* Encode the value at the top (popped) into b; returns 0 or -1 with the
 * message on the stack. */
static int encode_top(lua_State *L, mpe_buf *b, const char *root, mpe_fds *fds)
{
    lua_pushcfunction(L, p_encode);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, b);
    lua_pushstring(L, root);
    if (fds)
        lua_pushlightuserdata(L, fds);
    else
        lua_pushnil(L);
    return lua_pcall(L, 4, 0, 0) == LUA_OK ? 0 : -1;
}

/* Decode n bytes at p: pushes the value (0) or the message (-1). *used gets
 * the bytes consumed. */
static int decode_bytes(lua_State *L, const void *p, size_t n, mpe_fds *fds, size_t *used)
{
    mpe_rd r;
    mpe__rd_init(&r, p, n);
    lua_pushcfunction(L, p_decode);
    lua_pushlightuserdata(L, &r);
    if (fds)
        lua_pushlightuserdata(L, fds);
    else
        lua_pushnil(L);
    int rc = lua_pcall(L, 2, 1, 0) == LUA_OK ? 0 : -1;
    if (used)
        *used = r.pos;
    return rc;
}

/* Encode the global `v` of L, decode it into global `w` of L2. */
static void transfer(lua_State *L, lua_State *L2, const char *v, const char *w)
{
    mpe_buf b = {0};
    lua_getglobal(L, v);
    if (encode_top(L, &b, "value", NULL) != 0)
        MPE_FAIL("encode %s: %s", v, lua_tostring(L, -1));
    size_t used;
    if (decode_bytes(L2, b.p, b.n, NULL, &used) != 0)
        MPE_FAIL("decode %s: %s", v, lua_tostring(L2, -1));
    MPE_ASSERT_EQ(used, b.n);
    lua_setglobal(L2, w);
    mpe__buf_free(&b);
}

/* ---- scalars --------------------------------------------------------------------- */

static void test_scalars(void)
{
    lua_State *L = newstate();
    run(L, "local function rt(v) return mpe.decode(mpe.encode(v)) end\n"
           "assert(rt(nil) == nil and rt(true) == true and rt(false) == false)\n"
           "local unpack = table.unpack or unpack\n"
           "local big = HAS_INT and {math.maxinteger, math.mininteger, math.maxinteger - 1,\n"
           "  math.tointeger(2^31), math.tointeger(-2^31)} or {2^53, -2^53, 2^31, -2^31}\n"
           "for _, i in ipairs{0, 1, -1, 63, 64, -64, -65, 127, 128, 300, unpack(big)} do\n"
           "  local j = rt(i); assert(j == i and isint(j), tostring(i))\n"
           "end\n"
           "for _, f in ipairs{0.5, 1.0, -2.0, 1e308, 5e-324, math.pi, 2^63, -2^63} do\n"
           "  local g = rt(f); assert(g == f and isfloat(g), tostring(f))\n"
           "end\n"
           "local n = rt(0/0); assert(n ~= n)\n"
           "assert(rt(math.huge) == math.huge and rt(-math.huge) == -math.huge)\n"
           "assert(1 / rt(-0.0) == -math.huge and 1 / rt(0.0) == math.huge)\n"
           "assert(rt('') == '' and rt('a\\0b\\0') == 'a\\0b\\0')\n"
           "local s = {} for i = 0, 255 do s[#s + 1] = string.char(i) end\n"
           "s = table.concat(s):rep(100); assert(rt(s) == s)\n");
    lua_close(L);
}

/* NaN payloads and -0.0 travel bit for bit. */
static void test_float_bits(void)
{
    lua_State *L = newstate();
    uint64_t pats[] = {0x7ff8000000000001ULL, 0xfff0000000000001ULL, 0x8000000000000000ULL,
                       0x7ff0000000000000ULL, 0x0000000000000001ULL};
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        double d, e;
        memcpy(&d, &pats[i], 8);
        mpe_buf b = {0};
        lua_pushnumber(L, d);
        MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
        MPE_ASSERT_EQ(b.n, 9);
        MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, NULL, NULL), 0);
        MPE_ASSERT(lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1));
        e = lua_tonumber(L, -1);
        /* LuaJIT keeps one canonical NaN; everything else is bit-exact. */
        if (MPE_HAS_INTEGERS || !isnan(d))
            MPE_ASSERT(memcmp(&d, &e, 8) == 0);
        else
            MPE_ASSERT(isnan(e));
        lua_pop(L, 1);
        mpe__buf_free(&b);
    }
    lua_close(L);
}

/* A scalar is encoded and decoded without allocating anything in Lua. */
static void test_scalars_allocate_nothing(void)
{
    lua_State *L = newstate();
    mpe_buf b = {0};
    mpe__buf_grow(&b, 64);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_gc(L, LUA_GCSTOP, 0);
    lua_checkstack(L, 40);
    int before = lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0);
    for (int i = 0; i < 1000; i++) {
        b.n = 0;
        lua_pushinteger(L, i * 1000);
        mpe__encode(L, -1, &b, "value", NULL);
        lua_pop(L, 1);
        lua_pushnumber(L, i + 0.5);
        mpe__encode(L, -1, &b, "value", NULL);
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        mpe__encode(L, -1, &b, "value", NULL);
        lua_pop(L, 1);
        mpe_rd r;
        mpe__rd_init(&r, b.p, b.n);
        for (int k = 0; k < 3; k++) {
            mpe__decode(L, &r, NULL);
            lua_pop(L, 1);
        }
        MPE_ASSERT_EQ(r.pos, b.n);
    }
    int after = lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0);
    MPE_ASSERT_EQ(after, before);
    mpe__buf_free(&b);
    lua_close(L);
}

/* ---- tables ------------------------------------------------------------------------ */

static void test_tables(void)
{
    lua_State *L = newstate();
    run(L, "local function rt(v) return mpe.decode(mpe.encode(v)) end\n"
           "local t = {1, 'two', 3.0, {4}, x = 'y', [true] = false, [2.5] = 'f', ['a b'] = 1}\n"
           "local u = rt(t)\n"
           "assert(u[1] == 1 and u[2] == 'two' and isfloat(u[3]) and u[4][1] == 4)\n"
           "assert(u.x == 'y' and u[true] == false and u[2.5] == 'f' and u['a b'] == 1)\n"
           "local n = 0 for _ in pairs(u) do n = n + 1 end assert(n == 8)\n"
           "-- cycles and shared sub-tables\n"
           "local a, b = {}, {}\n"
           "a.b, b.a, a.self = b, a, a\n"
           "local s = {p = b, q = b, list = {a, a}}\n"
           "local s2 = rt(s)\n"
           "assert(s2.p == s2.q and s2.p.a.b == s2.p and s2.list[1] == s2.list[2])\n"
           "assert(s2.list[1].self == s2.list[1] and s2.list[1].b == s2.p)\n"
           "-- tables as keys, a table that is its own key\n"
           "local k = {}; k[k] = k\n"
           "local k2 = rt(k); assert(k2[k2] == k2)\n"
           "-- holes and integer keys past the border\n"
           "local h = {1, nil, 3, [10] = 10, [-1] = -1, [0] = 0}\n"
           "local h2 = rt(h)\n"
           "assert(h2[1] == 1 and h2[2] == nil and h2[3] == 3 and h2[10] == 10)\n"
           "assert(h2[-1] == -1 and h2[0] == 0)\n"
           "-- packed arrays, and arrays that only look packed\n"
           "local ints, floats = {}, {}\n"
           "for i = 1, 1000 do ints[i] = i * 7 - 3000; floats[i] = i / 3 end\n"
           "local i2, f2 = rt(ints), rt(floats)\n"
           "assert(#i2 == 1000 and #f2 == 1000)\n"
           "for i = 1, 1000 do assert(i2[i] == ints[i] and isint(i2[i]))\n"
           "  assert(f2[i] == floats[i] and isfloat(f2[i])) end\n"
           "assert(#mpe.encode(ints) < 1000 * 8 + 16)\n"
           "local mixed = {1, 2, 3, 4, 5.5, 6}\n"
           "local m2 = rt(mixed)\n"
           "assert(isint(m2[4]) and isfloat(m2[5]))\n"
           "local late = {1, 2, 3, 4, 5, 'six'}\n"
           "assert(rt(late)[6] == 'six' and rt(late)[5] == 5)\n"
           "local withkeys = {1, 2, 3, 4, 5, n = 5}\n"
           "local w2 = rt(withkeys); assert(w2.n == 5 and w2[5] == 5 and #w2 == 5)\n"
           "local packed_mt = setmetatable({1, 2, 3, 4}, {__index = function() return 'd' end})\n"
           "local p2 = rt(packed_mt); assert(p2[4] == 4 and p2[9] == 'd')\n"
           "-- the global table is the receiver's own\n"
           "local g = rt({_G, x = _G}); assert(g[1] == _G and g.x == _G)\n");
    lua_close(L);
}

static void test_metatables(void)
{
    lua_State *L = newstate();
    lua_State *L2 = newstate();
    run(L, "Point = {__index = {norm = function(p) return p.x * p.x + p.y * p.y end}}\n"
           "mpe.register('Point', Point)\n"
           "p = setmetatable({x = 3, y = 4}, Point)\n"
           "local q = mpe.decode(mpe.encode(p))\n"
           "assert(getmetatable(q) == Point and q:norm() == 25)\n"
           "local byval = setmetatable({}, {__index = {v = 7}})\n"
           "local c = mpe.decode(mpe.encode(byval))\n"
           "assert(c.v == 7 and getmetatable(c) ~= getmetatable(byval))\n"
           "local r = setmetatable({}, {}); getmetatable(r).__index = r; r.z = 1\n"
           "local r2 = mpe.decode(mpe.encode(r)); assert(getmetatable(r2).__index == r2)\n");
    /* A receiver that does not know the name: an error naming it. */
    mpe_buf b = {0};
    lua_getglobal(L, "p");
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    MPE_ASSERT_EQ(decode_bytes(L2, b.p, b.n, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L2, -1), "mpe: decode: unknown metatable 'Point'");
    lua_pop(L2, 1);
    /* Once registered there, it relinks to the receiver's own table. */
    run(L2, "MyPoint = {}; mpe.register('Point', MyPoint)");
    MPE_ASSERT_EQ(decode_bytes(L2, b.p, b.n, NULL, NULL), 0);
    lua_setglobal(L2, "q");
    run(L2, "assert(getmetatable(q) == MyPoint and q.x == 3)");
    mpe__buf_free(&b);
    /* register's argument checks and conflicts */
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.register(nil, {})"),
                        "mpe: register: argument 1 must be a non-empty string, got nil");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.register('', {})"),
                        "mpe: register: argument 1 must be a non-empty string");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.register('x', 5)"),
                        "mpe: register: argument 2 must be a table, got number");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.register('Point', {})"), "already registered");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.register('Other', Point)"),
                        "already registered as 'Point'");
    run(L, "assert(mpe.register('Point', Point) == Point)");
    lua_close(L);
    lua_close(L2);
}

/* ---- functions ---------------------------------------------------------------------- */

static void test_closures(void)
{
    lua_State *L = newstate();
    run(L, "local function rt(v) return mpe.decode(mpe.encode(v)) end\n"
           "local data = {10, 20, 30}\n"
           "local function helper(x) return x * 2 end\n"
           "local log = math.log\n"
           "local f = function(i) return helper(data[i]) + log(1) end\n"
           "local g = rt(f); assert(g(3) == 60)\n"
           "-- recursion: the function is its own upvalue\n"
           "local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end\n"
           "assert(rt(fact)(10) == 3628800)\n"
           "-- two closures sharing a variable keep sharing it\n"
           "local count = 0\n"
           "local function inc() count = count + 1 return count end\n"
           "local function get() return count end\n"
           "local pair = rt({inc = inc, get = get})\n"
           "pair.inc(); pair.inc()\n"
           "assert(pair.get() == 2 and count == 0)\n"
           "-- the same function twice is one function\n"
           "local twice = rt({f, f}); assert(twice[1] == twice[2])\n"
           "-- debug information is kept\n"
           "local info = debug.getinfo(g, 'S'); assert(info.linedefined == 5, info.linedefined)\n"
           "local okk, err = pcall(rt(function() error('boom') end))\n"
           "assert(err:match(':%d+: boom'), err)\n"
           "-- varargs and multiple results\n"
           "local v = rt(function(...) return select('#', ...), ... end)\n"
           "local n, a, b = v(1, nil, 3); assert(n == 3 and a == 1 and b == nil)\n"
           "-- C functions with their names, and standard-library closures\n"
           "local cf = rt({math.floor, string.format, print, mpe.encode})\n"
           "assert(cf[1] == math.floor and cf[2] == string.format and cf[3] == print)\n"
           "assert(cf[4] == mpe.encode)\n"
           "if HAS_INT then local it = rt(ipairs({})); assert(it({7}, 0) == 1)\n"
           "else local ok, e = pcall(rt, ipairs({}))\n"
           "  assert(not ok and e:match('cannot send built%-in function'), e) end\n");
    lua_close(L);
}

/* _ENV becomes the receiver's globals; C functions resolve by name there. */
static void test_function_to_other_state(void)
{
    lua_State *L = newstate();
    lua_State *L2 = newstate();
    run(L, "who = 'sender'\n"
           "local log = math.log\n"
           "f = function() return who, log(math.exp(2)) end\n");
    run(L2, "who = 'receiver'");
    transfer(L, L2, "f", "g");
    run(L2, "local w, x = g(); assert(w == 'receiver', w); assert(math.abs(x - 2) < 1e-12)");
    lua_close(L);
    lua_close(L2);
}

static int host_fn(lua_State *L)
{
    lua_pushinteger(L, luaL_checkinteger(L, 1) + 1000);
    return 1;
}

static int seven_fn(lua_State *L)
{
    lua_pushinteger(L, 7);
    return 1;
}

static int counter_fn(lua_State *L)
{
    lua_Integer n = lua_tointeger(L, lua_upvalueindex(1)) + 1;
    lua_pushinteger(L, n);
    lua_copy(L, -1, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    return 2;
}

/* A host's C function registered after the index was built is found by
 * name; one that has no name travels by address with its upvalues. */
static void test_c_functions(void)
{
    lua_State *L = newstate();
    lua_State *L2 = newstate();
    run(L, "assert(mpe.decode(mpe.encode(print)) == print)"); /* builds the index */
    lua_pushcfunction(L, host_fn);
    lua_setglobal(L, "host_fn");
    lua_pushcfunction(L2, host_fn);
    lua_setglobal(L2, "host_fn");
    run(L, "local h = host_fn; f = function(x) return h(x) end");
    transfer(L, L2, "f", "g");
    run(L2, "assert(g(1) == 1001)");
    /* A name that no longer reaches the function is not used: the receiver
     * would find whatever the name reaches there. */
    lua_pushcfunction(L, seven_fn);
    lua_setglobal(L, "hf2");
    run(L, "assert(mpe.decode(mpe.encode(hf2)) == hf2)\n"
           "old = hf2; hf2 = print; old = {old}");
    run(L2, "hf2 = print");
    transfer(L, L2, "old", "got");
    run(L2, "assert(got[1] ~= print and got[1]() == 7)");
    /* A name the receiver does not have. */
    lua_close(L2);
    L2 = newstate();
    run(L2, "math.floor = nil");
    mpe_buf b = {0};
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "floor");
    lua_remove(L, -2);
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    MPE_ASSERT_EQ(decode_bytes(L2, b.p, b.n, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L2, -1), "mpe: decode: unknown C function 'math.floor'");
    lua_pop(L2, 1);
    mpe__buf_free(&b);
    /* A C closure with upvalues, reachable by no name. */
    lua_pushinteger(L, 41);
    lua_newtable(L);
    lua_pushstring(L, "tag");
    lua_setfield(L, -2, "t");
    lua_pushcclosure(L, counter_fn, 2);
    lua_setglobal(L, "counter");
    /* A C closure whose upvalue contains it cannot be rebuilt: refused. */
    lua_newtable(L);
    lua_pushcclosure(L, counter_fn, 1);
    lua_getupvalue(L, -1, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 1);
    b.n = 0;
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L, -1),
                        "mpe: cannot send C function whose upvalues contain itself at "
                        "upvalue #1[1] of C function");
    lua_pop(L, 1);
    mpe__buf_free(&b);
    run(L, "local counter = counter; _G.counter = nil\n"
           "local c2 = mpe.decode(mpe.encode(counter))\n"
           "local n, t = c2(); assert(n == 42 and t.t == 'tag')\n"
           "assert(c2() == 43 and counter() == 42)\n"
           "local both = mpe.decode(mpe.encode({counter, counter}))\n"
           "assert(both[1] == both[2])\n");
    lua_close(L);
    lua_close(L2);
}

/* Code decodes only under the key it was encoded with. */
static void test_mac(void)
{
    unsigned char k1[16] = {1, 2, 3}, k2[16] = {9, 9, 9};
    lua_State *L = newstate();
    mpe__codec_set_key(k1);
    run(L, "f = function() return 1 end");
    mpe_buf b = {0};
    lua_getglobal(L, "f");
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, NULL, NULL), 0);
    lua_pop(L, 1);
    mpe__codec_set_key(k2);
    MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L, -1),
                        "mpe: decode: function from another program (checksum mismatch)");
    lua_pop(L, 1);
    mpe__codec_set_key(k1);
    /* Any changed byte of the code or its header is refused. */
    for (size_t i = 1; i < b.n; i++) {
        b.p[i] ^= 0x20;
        MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, NULL, NULL), -1);
        MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "mpe: decode:");
        lua_pop(L, 1);
        b.p[i] ^= 0x20;
    }
    mpe__buf_free(&b);
    /* C addresses too. */
    lua_pushcclosure(L, counter_fn, 0);
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    mpe__codec_set_key(k2);
    MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "checksum mismatch");
    mpe__buf_free(&b);
    lua_close(L);
}

/* Functions cross fork (the key is inherited), as pool workers need. */
static void test_mac_across_fork(void)
{
    lua_State *L = newstate();
    run(L, "local x = 5; f = function() return x * 2 end");
    mpe_buf b = {0};
    lua_getglobal(L, "f");
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    pid_t pid = fork();
    MPE_ASSERT(pid >= 0);
    if (pid == 0) {
        int ok = decode_bytes(L, b.p, b.n, NULL, NULL) == 0 && lua_pcall(L, 0, 1, 0) == 0 &&
                 lua_tointeger(L, -1) == 10;
        _exit(ok ? 0 : 1);
    }
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r == -1 && errno == EINTR);
    MPE_ASSERT(r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mpe__buf_free(&b);
    lua_close(L);
}

/* ---- unsendable values and their paths ---------------------------------------------- */

static void test_unsendable(void)
{
    lua_State *L = newstate();
    mpe_buf b = {0};
    run(L, "args = {1, {co = coroutine.create(print)}}");
    lua_getglobal(L, "args");
    MPE_ASSERT_EQ(encode_top(L, &b, "args", NULL), -1);
    MPE_ASSERT_STREQ(lua_tostring(L, -1), "mpe: cannot send coroutine at args[2].co");
    lua_pop(L, 1);
    run(L, "local log = io.stdout\n"
           "job = function() return log end");
    lua_getglobal(L, "job");
    b.n = 0;
    MPE_ASSERT_EQ(encode_top(L, &b, "args", NULL), -1);
    MPE_ASSERT_STREQ(lua_tostring(L, -1),
                     "mpe: cannot send userdata (FILE*) at upvalue 'log' of function "
                     "([string \"local log = io.stdout...\"]:2)");
    lua_pop(L, 1);
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.encode({['a b'] = {[3] = {x = io.stderr}}})"),
                        "mpe: cannot send userdata (FILE*) at value[\"a b\"][3].x");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.encode({[{}] = {print, coroutine.create(print)}})"),
                        "mpe: cannot send coroutine at value[<table>][2]");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.encode({[coroutine.create(print)] = 1})"),
                        "mpe: cannot send coroutine at value[<key>]");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.encode(setmetatable({}, {__gc = io.stdout}))"),
                        "mpe: cannot send userdata (FILE*) at value<metatable>.__gc");
    MPE_ASSERT_CONTAINS(run_err(L, "local t = {} local function f() return t end\n"
                                   "t.x = {y = io.stdin}; mpe.encode({{f}})"),
                        "mpe: cannot send userdata (FILE*) at upvalue 't'.x.y of function");
    lua_pushlightuserdata(L, &b);
    b.n = 0;
    MPE_ASSERT_EQ(encode_top(L, &b, "result", NULL), -1);
    MPE_ASSERT_STREQ(lua_tostring(L, -1), "mpe: cannot send light userdata at result");
    lua_pop(L, 1);
    mpe__buf_free(&b);
    lua_close(L);
}

static void test_depth(void)
{
    lua_State *L = newstate();
    MPE_ASSERT_CONTAINS(run_err(L, "local t = {} for i = 1, 1000000 do t = {t} end\n"
                                   "mpe.encode(t)"),
                        "mpe: cannot send value: nesting deeper than 200 levels at "
                        "value[1][1][1]");
    lua_settop(L, 0);
    run(L, "local t = {} for i = 1, 190 do t = {t} end\n"
           "local u = mpe.decode(mpe.encode(t)); for i = 1, 190 do u = u[1] end\n"
           "assert(next(u) == nil)\n"
           "local c = {} for i = 1, 300 do c = {k = c} end\n"
           "assert(not pcall(mpe.encode, c))\n");
    /* The decoder bounds depth too, whatever the encoder did. */
    size_t n = 3 * 100000 + 1;
    unsigned char *p = malloc(n);
    MPE_ASSERT(p != NULL);
    for (size_t i = 0; i < n; i += 2) {
        p[i] = 6; /* T_TABLE of one item: the next table */
        if (i + 1 < n)
            p[i + 1] = 1;
    }
    MPE_ASSERT_EQ(decode_bytes(L, p, n, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "mpe: decode: nesting deeper than 200 levels");
    free(p);
    lua_close(L);
}

/* ---- the decoder against bad input --------------------------------------------------- */

/* Every proper prefix of a valid encoding is refused cleanly; the whole
 * decodes. */
static void check_prefixes(lua_State *L, const char *code)
{
    mpe_buf b = {0};
    if (luaL_dostring(L, code) != LUA_OK)
        MPE_FAIL("%s", lua_tostring(L, -1));
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    for (size_t n = 0; n < b.n; n++) {
        if (decode_bytes(L, b.p, n, NULL, NULL) == 0)
            MPE_FAIL("prefix %zu of %zu of %s decoded", n, b.n, code);
        MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "mpe: decode:");
        lua_pop(L, 1);
    }
    size_t used;
    MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, NULL, &used), 0);
    MPE_ASSERT_EQ(used, b.n);
    lua_settop(L, 0);
    mpe__buf_free(&b);
}

static void test_truncated(void)
{
    lua_State *L = newstate();
    check_prefixes(L, "return 'hello\\0world'");
    check_prefixes(L, "return -123456789");
    check_prefixes(L, "return 2.5");
    check_prefixes(L, "local t = {1, 2, 3, 4, 5, 6.5, x = {y = 'z'}}; t.t = t; return t");
    check_prefixes(L, "return {1.5, 2.5, 3.5, 4.5, 5.5}");
    check_prefixes(L, "return {1, 2, 3, 4, 5, k = true}");
    check_prefixes(L, "local u = {1} local function f() return u, math.log end return f");
    check_prefixes(L, "local mt = {} mpe.register('Q', mt) return {setmetatable({}, mt), "
                      "setmetatable({}, {__index = {}})}");
    check_prefixes(L, "return {print, string.format, HAS_INT and ipairs({}) or 1}");
    lua_close(L);
}

static void test_bad_input(void)
{
    lua_State *L = newstate();
    static const struct {
        const char *bytes;
        size_t n;
        const char *msg;
    } bad[] = {
        {"", 0, "truncated input at offset 0"},
        {"\xff", 1, "bad tag at offset 0"},
        {"\x10", 1, "bad tag at offset 0"},
        {"\x0f\x03" "zzz", 5, "module 'zzz' is not loaded here"},
        {"\x05\x05" "abc", 5, "truncated input"},
        {"\x05\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 11, "truncated input"},
        {"\x05\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "malformed varint"},
        {"\x06\xff\xff\xff\xff\x0f", 6, "array length larger than the input"},
        {"\x07\x02" "12345678", 10, "array length larger than the input"},
        {"\x06\x00\xff\xff\xff\xff", 6, "key count larger than the input"},
        {"\x06\x00\x01\x00\x00\x00\x00\x01\x00", 9, "table key is nil or NaN"},
        {"\x06\x00\x01\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\xf8\x7f\x01\x00", 17,
         "table key is nil or NaN"},
        {"\x06\x00\x00\x00\x00\x00\x07", 7, "bad metatable mark"},
        {"\x06\x00\x00\x00\x00\x00\x01\x03\x02", 9, "metatable is not a table"},
        {"\x06\x01\x09\x05\x00\x00\x00\x00\x00", 9, "bad reference"},
        {"\x09\x01", 2, "bad reference"},
        {"\x09\x00", 2, "bad reference"},
        {"\x0c\x03" "zzz", 5, "unknown C function 'zzz'"},
        {"\x0c\x04" "a\x01z\n", 6, "unknown C function 'a?z?'"},
        {"\x0e\x03" "abc", 5, "unknown shared object type 'abc'"},
        {"\x0b\x01\x00\x00\x00\x1b\x00\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a", 15,
         "checksum mismatch"},
        {"\x0d\x01\x02\x03\x04\x05\x06\x07\x08\x00\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a", 18,
         "checksum mismatch"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (decode_bytes(L, bad[i].bytes, bad[i].n, NULL, NULL) == 0)
            MPE_FAIL("bad input %zu decoded", i);
        const char *m = lua_tostring(L, -1);
        MPE_ASSERT_CONTAINS(m, "mpe: decode: ");
        MPE_ASSERT_CONTAINS(m, bad[i].msg);
        lua_pop(L, 1);
    }
    /* A crafted name of 1 MB of dots is refused at once, not in quadratic time. */
    size_t nn = 1 << 20;
    unsigned char *dots = malloc(nn + 4);
    MPE_ASSERT(dots != NULL);
    dots[0] = 12; /* T_CFUNC_NAME, varint 2^20 */
    dots[1] = 0x80;
    dots[2] = 0x80;
    dots[3] = 0x40;
    memset(dots + 4, '.', nn);
    MPE_ASSERT_EQ(decode_bytes(L, dots, nn + 4, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "mpe: decode: unknown C function '.....");
    lua_pop(L, 1);
    free(dots);
    /* Every tag past the last one is refused. */
    for (unsigned tag = 16; tag < 256; tag++) {
        unsigned char c = (unsigned char)tag;
        MPE_ASSERT_EQ(decode_bytes(L, &c, 1, NULL, NULL), -1);
        MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "bad tag at offset 0");
        lua_pop(L, 1);
    }
    /* The Lua API: version byte, trailing bytes, argument type. */
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.decode('')"), "mpe: decode: empty input");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.decode('\\2\\0')"),
                        "mpe: decode: unknown format version 2 (expected 1)");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.decode(mpe.encode(1) .. 'x')"),
                        "mpe: decode: 1 bytes of trailing garbage at offset 3");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.decode(5)"),
                        "mpe: decode: argument 1 must be a string, got number");
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.encode()"), "mpe: encode: argument 1 is missing");
    run(L, "assert(mpe.encode(nil) == '\\1\\0')");
    lua_close(L);
}

/* An allocator that refuses to go past 64 MB. */
static size_t limited_used;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        limited_used -= osize;
        return NULL;
    }
    if (nsize > osize && limited_used + (nsize - osize) > ((size_t)64 << 20))
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        limited_used += nsize - osize;
    return p;
}

/* Nested array headers that each claim the rest of the input must not
 * preallocate that much each: 1 MB of input may not cost gigabytes. */
static void test_no_amplification(void)
{
    lua_State *L = lua_newstate(limited_alloc, NULL);
    MPE_ASSERT(L != NULL);
    size_t n = 1 << 20, pos = 0;
    unsigned char *p = calloc(1, n);
    MPE_ASSERT(p != NULL);
    for (int level = 0; level < 150; level++) {
        uint64_t claim = n - pos - 16;
        p[pos++] = 6; /* T_TABLE */
        while (claim >= 0x80) {
            p[pos++] = (unsigned char)(claim | 0x80);
            claim >>= 7;
        }
        p[pos++] = (unsigned char)claim;
    }
    /* The rest is zeros: nils for the innermost array, then no key count. */
    MPE_ASSERT_EQ(decode_bytes(L, p, n, NULL, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L, -1), "mpe: decode: truncated input");
    free(p);
    lua_close(L);
}

/* Random bytes and random mutations of valid encodings never crash. */
static void test_garbage(void)
{
    lua_State *L = newstate();
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    unsigned char buf[256];
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        for (; n < (size_t)(round % 200) + 1; n++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            unsigned char c = (unsigned char)seed;
            /* favour small bytes: tags and short lengths */
            buf[n] = (seed >> 8) % 4 ? c % 16 : c;
        }
        decode_bytes(L, buf, n, NULL, NULL);
        lua_settop(L, 0);
    }
    mpe_buf b = {0};
    run(L, "local t = {1, 2.5, 'x', {y = {1, 2, 3, 4}}, [true] = {}, f = print}\n"
           "t.self = t; t.mt = setmetatable({}, {__index = t}); T = t");
    lua_getglobal(L, "T");
    MPE_ASSERT_EQ(encode_top(L, &b, "value", NULL), 0);
    for (int round = 0; round < 20000; round++) {
        char *m = malloc(b.n);
        MPE_ASSERT(m != NULL);
        memcpy(m, b.p, b.n);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            m[(seed >> 16) % b.n] = (char)seed;
        }
        decode_bytes(L, m, b.n - (round % 3 == 0 ? (seed >> 40) % b.n : 0), NULL, NULL);
        lua_settop(L, 0);
        free(m);
    }
    mpe__buf_free(&b);
    lua_close(L);
}

/* ---- shared objects through the type hooks ------------------------------------------- */

typedef struct thing {
    int fd;
    uint32_t value;
} thing;

static void thing_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    thing *t = luaL_checkudata(L, idx, "test.Thing");
    mpe__buf_put_u32(L, b, t->value);
    mpe__buf_put_u8(L, b, (unsigned)fds->n);
    if (mpe__fds_add(fds, t->fd) != 0)
        luaL_error(L, "too many descriptors");
}

static int thing_gc(lua_State *L)
{
    thing *t = luaL_checkudata(L, 1, "test.Thing");
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    return 0;
}

static void push_thing(lua_State *L, int fd, uint32_t value)
{
    thing *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->fd = fd;
    t->value = value;
    if (luaL_newmetatable(L, "test.Thing")) {
        lua_pushcfunction(L, thing_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
}

static void thing_decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    uint32_t v;
    unsigned slot;
    if (mpe__rd_u32(r, &v) != 0 || mpe__rd_u8(r, &slot) != 0 || !fds || (int)slot >= fds->n ||
        fds->fd[slot] < 0)
        luaL_error(L, "mpe: decode: bad test.Thing");
    push_thing(L, fds->fd[slot], v);
    fds->fd[slot] = -1; /* taken */
}

static const mpe_codec_type thing_type = {"test.Thing", thing_encode, thing_decode};

static void test_shared_objects(void)
{
    lua_State *L = newstate();
    mpe__codec_add_type(L, &thing_type);
    int p[2];
    MPE_ASSERT_EQ(pipe(p), 0);
    close(p[1]);
    push_thing(L, p[0], 77);
    lua_setglobal(L, "thing");
    /* Without descriptors (mpe.encode) a shared object cannot travel. */
    MPE_ASSERT_CONTAINS(run_err(L, "mpe.encode({x = thing})"),
                        "mpe: cannot send test.Thing at value.x: shared objects need "
                        "descriptor passing");
    lua_settop(L, 0);
    /* With them it travels by reference, once per message. */
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    run(L, "msg = {thing, thing, n = 1}");
    lua_getglobal(L, "msg");
    MPE_ASSERT_EQ(encode_top(L, &b, "args", &fds), 0);
    MPE_ASSERT_EQ(fds.n, 1);
    MPE_ASSERT_EQ(fds.fd[0], p[0]);
    mpe_fds in = {0};
    MPE_ASSERT_EQ(mpe__fds_add(&in, dup(p[0])), 0);
    MPE_ASSERT(in.fd[0] >= 0);
    MPE_ASSERT_EQ(decode_bytes(L, b.p, b.n, &in, NULL), 0);
    MPE_ASSERT_EQ(in.fd[0], -1); /* the decoder took it */
    lua_setglobal(L, "got");
    run(L, "assert(got[1] == got[2] and got[1] ~= thing and got.n == 1)");
    /* A receiver without the type: an error naming it, and the caller still owns the fd. */
    lua_State *L2 = newstate();
    in.fd[0] = dup(p[0]);
    MPE_ASSERT_EQ(decode_bytes(L2, b.p, b.n, &in, NULL), -1);
    MPE_ASSERT_CONTAINS(lua_tostring(L2, -1), "unknown shared object type 'test.Thing'");
    MPE_ASSERT(in.fd[0] >= 0);
    mpe__fds_close(&in);
    free(fds.fd); /* its one slot is the thing's own descriptor */
    lua_close(L2);
    mpe__buf_free(&b);
    lua_close(L); /* closes the things' descriptors */
}

/* ---- mpe.encode as the Lua API sees it ------------------------------------------------- */

/* mpe__decode_numbers under pcall: t (a fresh table) at 1, then first, the
 * bytes, count, ints. */
static int p_numbers(lua_State *L)
{
    size_t len;
    const char *p = lua_tolstring(L, 3, &len);
    mpe__decode_numbers(L, 1, (lua_Integer)lua_tonumber(L, 2), p, len, (size_t)lua_tonumber(L, 4),
                        lua_toboolean(L, 5));
    lua_settop(L, 1);
    return 1;
}

/* Run p_numbers; returns the table (on the stack) or NULL with the message on top. */
static int numbers(lua_State *L, lua_Integer first, const void *p, size_t len, size_t count,
                   int ints)
{
    lua_pushcfunction(L, p_numbers);
    lua_newtable(L);
    lua_pushnumber(L, (lua_Number)first);
    lua_pushlstring(L, p, len);
    lua_pushnumber(L, (lua_Number)count);
    lua_pushboolean(L, ints);
    return lua_pcall(L, 5, 1, 0) == LUA_OK;
}

/* The packed-number loop shared by T_TABLE_INT/FLOAT and packed result frames:
 * every value lands at its index with its subtype; short input and indices
 * that do not fit raise and write nothing past the input. */
static void test_decode_numbers(void)
{
    lua_State *L = newstate();
    int64_t iv[6] = {0, -1, 1, 4611686018427387904LL, -4611686018427387904LL, 9007199254740993LL};
    if (MPE_HAS_INTEGERS) {
        iv[3] = INT64_MAX;
        iv[4] = INT64_MIN;
    } else {
        iv[5] = 9007199254740992LL; /* LuaJIT: a double holds up to 2^53 exactly */
    }
    unsigned char buf[6 * 8];
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 8; k++)
            buf[8 * i + k] = (unsigned char)((uint64_t)iv[i] >> (8 * k));
    MPE_ASSERT(numbers(L, 5, buf, sizeof buf, 6, 1));
    for (int i = 0; i < 6; i++) {
        lua_rawgeti(L, -1, 5 + i);
        MPE_ASSERT(lua_type(L, -1) == LUA_TNUMBER);
        if (MPE_HAS_INTEGERS) {
            MPE_ASSERT(lua_isinteger(L, -1));
            MPE_ASSERT((int64_t)lua_tointeger(L, -1) == iv[i]);
        } else {
            MPE_ASSERT(lua_tonumber(L, -1) == (lua_Number)iv[i]);
        }
        lua_pop(L, 1);
    }
    for (int i = 0; i <= 11; i += i == 4 ? 7 : 1) { /* nothing below first or past the end */
        lua_rawgeti(L, -1, i);
        MPE_ASSERT(lua_isnil(L, -1));
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    /* doubles: NaN, -0.0, infinities, the smallest subnormal */
    double dv[6] = {NAN, -0.0, INFINITY, -INFINITY, 5e-324, 1.0 / 3};
    for (int i = 0; i < 6; i++) {
        uint64_t u;
        memcpy(&u, &dv[i], 8);
        for (int k = 0; k < 8; k++)
            buf[8 * i + k] = (unsigned char)(u >> (8 * k));
    }
    MPE_ASSERT(numbers(L, 1, buf, sizeof buf, 6, 0));
    MPE_ASSERT(lua_rawlen(L, -1) == 6);
    for (int i = 0; i < 6; i++) {
        lua_rawgeti(L, -1, 1 + i);
        MPE_ASSERT(lua_type(L, -1) == LUA_TNUMBER);
        MPE_ASSERT(!MPE_HAS_INTEGERS || !lua_isinteger(L, -1));
        double d = (double)lua_tonumber(L, -1);
        MPE_ASSERT(memcmp(&d, &dv[i], 8) == 0 || (isnan(d) && isnan(dv[i])));
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    /* nothing to do: no table entries, whatever first is */
    MPE_ASSERT(numbers(L, 0, buf, 0, 0, 1));
    MPE_ASSERT(lua_rawlen(L, -1) == 0);
    lua_pushnil(L);
    MPE_ASSERT(lua_next(L, -2) == 0);
    lua_settop(L, 0);
    /* short input: count * 8 > len */
    MPE_ASSERT(!numbers(L, 1, buf, 8 * 3 - 1, 3, 1));
    MPE_ASSERT(strstr(lua_tostring(L, -1), "mpe: decode: 3 packed numbers in 23 bytes") != NULL);
    lua_settop(L, 0);
    /* indices that do not fit */
    MPE_ASSERT(!numbers(L, 0, buf, 8, 1, 1));
    MPE_ASSERT(strstr(lua_tostring(L, -1), "do not fit") != NULL);
    lua_settop(L, 0);
    MPE_ASSERT(!numbers(L, MPE_HAS_INTEGERS ? (lua_Integer)INT64_MAX : INT_MAX, buf, 16, 2, 1));
    MPE_ASSERT(strstr(lua_tostring(L, -1), "do not fit") != NULL);
    lua_close(L);
}

/* Small lists decode integers inline (no packed form below 4 elements):
 * every kind of element still decodes, and a truncated integer raises. */
static void test_small_lists(void)
{
    lua_State *L = newstate();
    run(L, "local function rt(v) return mpe.decode(mpe.encode(v)) end\n"
           "local e = rt({}); assert(next(e) == nil)\n"
           "local a = rt({2, 3}); assert(#a == 2 and a[1] == 2 and a[2] == 3 and isint(a[1]))\n"
           "local big = HAS_INT and {math.maxinteger, math.mininteger, -1} or {2^53, -2^53, -1}\n"
           "local b = rt(big)\n"
           "for i = 1, 3 do assert(b[i] == big[i] and isint(b[i])) end\n"
           "local m = rt({1, 2.5, 3}); assert(isint(m[1]) and isfloat(m[2]) and m[2] == 2.5 and isint(m[3]))\n"
           "local n = rt({0/0, 1, 2}); assert(n[1] ~= n[1] and n[2] == 1 and n[3] == 2)\n"
           "local t = rt({1, {2, 3}, 'x'}); assert(t[1] == 1 and t[2][1] == 2 and t[2][2] == 3 and t[3] == 'x')\n"
           "local k = rt({7, 8, n = 2}); assert(k[1] == 7 and k[2] == 8 and k.n == 2)\n"
           "local s = {1}; local r = rt({s, 5, s}); assert(r[1] == r[3] and r[2] == 5 and r[1][1] == 1)\n"
           "local many = {} for i = 1, 200 do many[i] = {i, -i, i * i} end\n"
           "local m2 = rt(many)\n"
           "for i = 1, 200 do local f = m2[i]; assert(#f == 3 and f[1] == i and f[2] == -i and f[3] == i * i) end\n");
    /* T_TABLE, 2 elements: an integer whose varint is cut off, then one past the end */
    static const unsigned char cut[] = {MPE_CODEC_VERSION, 6, 2, 3, 0x80};
    lua_pushlstring(L, (const char *)cut, sizeof cut);
    lua_setglobal(L, "CUT");
    static const unsigned char shortl[] = {MPE_CODEC_VERSION, 6, 2, 3, 4};
    lua_pushlstring(L, (const char *)shortl, sizeof shortl);
    lua_setglobal(L, "SHORT");
    const char *m = run_err(L, "mpe.decode(CUT)");
    MPE_ASSERT(strstr(m, "mpe: decode:") != NULL);
    lua_settop(L, 0);
    m = run_err(L, "mpe.decode(SHORT)");
    MPE_ASSERT(strstr(m, "mpe: decode:") != NULL);
    lua_close(L);
}

static void test_big_string(void)
{
    lua_State *L = newstate();
    run(L, "local s = string.rep('ab\\0', 3500000)\n"
           "local e = mpe.encode(s); assert(#e == #s + 6, #e)\n"
           "assert(mpe.decode(e) == s)\n"
           "local t = mpe.decode(mpe.encode({s, s}))\n"
           "assert(t[1] == s and t[2] == s)\n");
    lua_close(L);
}

MPE_TEST_MAIN(MPE_TEST(test_scalars), MPE_TEST(test_float_bits),
              MPE_TEST(test_scalars_allocate_nothing), MPE_TEST(test_tables),
              MPE_TEST(test_metatables), MPE_TEST(test_closures),
              MPE_TEST(test_function_to_other_state), MPE_TEST(test_c_functions),
              MPE_TEST(test_mac), MPE_TEST(test_mac_across_fork), MPE_TEST(test_unsendable),
              MPE_TEST(test_depth), MPE_TEST(test_truncated), MPE_TEST(test_bad_input),
              MPE_TEST_T(test_garbage, 120), MPE_TEST(test_no_amplification),
              MPE_TEST(test_shared_objects),
              MPE_TEST(test_big_string), MPE_TEST(test_decode_numbers),
              MPE_TEST(test_small_lists))
