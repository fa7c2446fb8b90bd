/*
** dns.c: name resolution with getaddrinfo on libuv's thread pool (uv_getaddrinfo).
**
** A cancelled resolution is abandoned: uv_cancel takes it off the queue if no thread runs it
** yet, and the callback (which libuv always calls) frees the request and its results.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct dreq {
  uv_getaddrinfo_t req;
  lasync__abandoned ab;        /* linked while abandoned and still running */
  lasync__runtime *rt;
  lasync_op *op;               /* the waiting task's op; NULL once abandoned */
  struct addrinfo *res;
  int status;
  unsigned char done;
} dreq;

static void dreq_free(dreq *r) {
  if (r->res) uv_freeaddrinfo(r->res);
  free(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dreq *r = (dreq *)req->data;
  r->done = 1;
  lasync__abandon_end(&r->ab);
  r->status = status;
  r->res = res;
  if (r->op)
    lasync_op_complete(r->op, 0);  /* the deliver function frees r */
  else
    dreq_free(r);
}

static void dns_cancel(void *data) {
  dreq *r = (dreq *)data;
  r->op = NULL;
  if (r->done) {
    dreq_free(r);  /* resolved, but the task was cancelled before it resumed */
  } else {
    lasync__abandon(r->rt, &r->ab);
    uv_cancel((uv_req_t *)&r->req);  /* fails harmlessly once a thread runs it */
  }
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
  int st = r->status;
  (void)status;
  if (st < 0) {
    dreq_free(r);
    return lasync__raise_dns(L, st, 1);
  }
  push_addresses(L, r->res);
  dreq_free(r);
  return 1;
}

/* core.dns_resolve(host [, family]) -> {address, ...}; family: 4, 6 or nil for both */
static int dns_resolve(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  size_t len;
  const char *host = luaL_checklstring(L, 1, &len);
  lua_Integer family = luaL_optinteger(L, 2, 0);
  struct addrinfo hints;
  lasync_op *op;
  dreq *r;
  int rc;
  luaL_argcheck(L, len > 0 && strlen(host) == len, 1, "expected a host name or an address");
  luaL_argcheck(L, family == 0 || family == 4 || family == 6, 2, "family must be 4 or 6");
  lua_settop(L, 2);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family == 4 ? AF_INET : family == 6 ? AF_INET6 : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  /* one entry per address, not one per socket type */
  op = lasync_op_new(L);
  r = (dreq *)calloc(1, sizeof *r);
  if (r == NULL) return luaL_error(L, "not enough memory");
  r->op = op;
  r->rt = rt;
  r->req.data = r;
  rc = uv_getaddrinfo(rt->loop, &r->req, on_resolved, host, NULL, &hints);
  if (rc < 0) {  /* refused before queuing: the callback will not run */
    r->done = 1;
    r->status = rc;
    lasync_op_complete(op, 0);
  }
  return lasync_op_await(L, op, r, dns_deliver, dns_cancel);
}

void lasync__open_dns(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg funcs[] = {{"dns_resolve", dns_resolve}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
}
