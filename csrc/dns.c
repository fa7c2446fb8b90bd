/*
** dns.c: name resolution with getaddrinfo on libuv's thread pool (uv_getaddrinfo), for
** dns.resolve and for tcp.connect and tcp.serve; numeric addresses.
**
** A cancelled resolution is abandoned (req.c): uv_cancel takes it off the queue if no thread
** runs it yet, and the callback (which libuv always calls) frees the request and its results.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct dreq {
  lasync__req base;            /* must be first */
  uv_getaddrinfo_t req;
  struct addrinfo *res;
} dreq;

static void dreq_cancel(lasync__req *b) {
  if (!b->done) uv_cancel((uv_req_t *)&((dreq *)b)->req);  /* fails harmlessly once a thread
                                                               runs it */
}

static void dreq_release(lasync__req *b, int taken) {
  dreq *r = (dreq *)b;
  (void)taken;  /* the deliver function copies the addresses into Lua */
  if (r->res) uv_freeaddrinfo(r->res);
}

static const lasync__reqtype dreq_type = {dreq_cancel, dreq_release, 1};

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dreq *r = (dreq *)req->data;
  r->res = res;
  lasync__req_done(&r->base, status);
}

int lasync__parse_addr(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  memset(ss, 0, sizeof *ss);
  return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
}

/* Pushes the list of distinct addresses, in getaddrinfo's order. [-0, +1, m] */
static void push_addresses(lua_State *L, struct addrinfo *ai) {
  int n = 0;
  lua_newtable(L);   /* the list */
  lua_newtable(L);   /* seen */
  for (; ai; ai = ai->ai_next) {
    char name[INET6_ADDRSTRLEN + 1];
    if (ai->ai_family == AF_INET)
      uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, name, sizeof name);
    else if (ai->ai_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, name, sizeof name);
    else
      continue;
    lua_pushstring(L, name);
    if (lua_rawget(L, -2) == LUA_TNIL) {
      lua_pushstring(L, name);
      lua_pushboolean(L, 1);
      lua_rawset(L, -4);
      lua_pushstring(L, name);
      lua_rawseti(L, -4, ++n);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

int lasync__raise_dns(lua_State *L, int status, int hostidx) {
  hostidx = lua_absindex(L, hostidx);
  lasync__push_error(L, "dns", "%s: %s (resolving '%s')", uv_err_name(status),
                     uv_strerror(status), lua_tostring(L, hostidx));
  lua_pushstring(L, uv_err_name(status));
  lua_setfield(L, -2, "code");
  lua_pushvalue(L, hostidx);
  lua_setfield(L, -2, "host");
  return lua_error(L);
}

static int dns_deliver(lua_State *L, void *data, int status) {
  dreq *r = (dreq *)data;
  int st = r->base.status;
  (void)status;
  if (st < 0) {
    lasync__req_free(&r->base);
    return lasync__raise_dns(L, st, 1);
  }
  push_addresses(L, r->res);
  lasync__req_free(&r->base);
  return 1;
}

/* core.dns_resolve(host [, family]) -> {address, ...}; family: 4, 6 or nil for both. A numeric
** address (of that family) is the answer itself: no thread-pool trip, no suspension. */
static int dns_resolve(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  size_t len;
  const char *host = luaL_checklstring(L, 1, &len);
  lua_Integer family = luaL_optinteger(L, 2, 0);
  struct sockaddr_storage ss;
  struct addrinfo hints;
  dreq *r;
  luaL_argcheck(L, len > 0 && strlen(host) == len, 1, "expected a host name or an address");
  luaL_argcheck(L, family == 0 || family == 4 || family == 6, 2, "family must be 4 or 6");
  lua_settop(L, 2);
  if (lasync__parse_addr(host, 0, &ss) == 0 &&
      (family == 0 || (family == 4) == (ss.ss_family == AF_INET))) {
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    return 1;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family == 4 ? AF_INET : family == 6 ? AF_INET6 : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  /* one entry per address, not one per socket type */
  r = (dreq *)lasync__req_new(L, &dreq_type, sizeof *r);
  r->req.data = r;
  return lasync__req_await(L, &r->base,
                           uv_getaddrinfo(rt->loop, &r->req, on_resolved, host, NULL, &hints),
                           dns_deliver);
}

void lasync__open_dns(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg funcs[] = {{"dns_resolve", dns_resolve}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
}
