/*
** fs.c: files on libuv's thread pool (uv_fs_*). Every call suspends only the calling task.
**
** Path operations (stat, scandir, mkdir, unlink, rmdir, rename, open) and the File object
** (lasync.fs.File: read, write, seek, lines, close), shaped like Lua's io files; read_file and
** write_file as one thread-pool job each (uv_queue_work: open, read or write, close). The Lua
** layer (lua/lasync/fs.lua) composes the rest: mkdir with parents, remove, exists, lines.
**
** Lifetimes: each request is a malloc'd `freq`, awaited through req.c. While a task waits, the
** op API keeps the task anchored and the task's stack keeps the File alive. When the task is
** cancelled, the request is abandoned (uv_cancel if it is still queued): the fs callback then
** frees it, closes a file descriptor that an abandoned open produced, and never touches a File
** that was closed or collected meanwhile (file == NULL). Data a write hands to the thread pool
** is a private copy.
*/
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

#define LASYNC_FILE_MT "lasync.fs.File"  /* also in error.c's class names */
#define CHUNK 65536                      /* bytes per read request, at least */
#define MAXREAD (1 << 24)                /* bytes per read request, at most */
#define MAXNUM 200                       /* longest numeral read("n") accepts (as liolib) */

typedef struct lfile lfile;

enum { REQ_PATH, REQ_OPEN, REQ_READ, REQ_WRITE };

typedef struct freq {
  lasync__req base;            /* must be first; base.op is NULL once abandoned */
  uv_fs_t req;
  lfile *file;                 /* the File a read/write belongs to; NULL once it was closed */
  char *data;                  /* read: the thread pool's buffer; write: a copy of the data */
  size_t len, done_len;        /* write: bytes to write, bytes written */
  uv_file close_fd;            /* close this descriptor when the request ends (or -1) */
  int kind;                    /* REQ_* */
  unsigned char fd_taken;      /* open: the File owns the descriptor */
} freq;

struct lfile {
  lasync__runtime *rt;
  uv_file fd;                  /* -1 once closed */
  unsigned char readable, writable, append, eof;
  freq *inflight;              /* the read or write in progress (maybe abandoned), or NULL */
  lasync_op *idle_op;          /* a task waits for an abandoned request to end */
  char *buf;                   /* read-ahead: unread bytes are buf[off..len) */
  size_t cap, off, len;
  size_t want;                 /* read: bytes the current format still needs */
  int nargs;                   /* read: number of arguments (the formats are 2..nargs) */
};

/* {====== errors ======} */

static const char *syscall_name(uv_fs_type t) {
  switch (t) {
    case UV_FS_OPEN: return "open";
    case UV_FS_READ: return "read";
    case UV_FS_WRITE: return "write";
    case UV_FS_STAT: return "stat";
    case UV_FS_LSTAT: return "lstat";
    case UV_FS_SCANDIR: return "scandir";
    case UV_FS_MKDIR: return "mkdir";
    case UV_FS_UNLINK: return "unlink";
    case UV_FS_RMDIR: return "rmdir";
    case UV_FS_RENAME: return "rename";
    default: return "fs";
  }
}

/* Pushes an fs error object: kind "fs", code (errno name), errno, path, syscall and dest (when
** not NULL). [-0, +1, m] */
static void push_fs_error(lua_State *L, int err, const char *syscall, const char *path,
                          const char *dest) {
  if (dest)
    lasync__push_error(L, "fs", "%s: %s (%s '%s' -> '%s')", uv_err_name(err), uv_strerror(err),
                       syscall, path, dest);
  else
    lasync__push_error(L, "fs", "%s: %s (%s '%s')", uv_err_name(err), uv_strerror(err),
                       syscall, path);
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, -err);
  lua_setfield(L, -2, "errno");
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, syscall);
  lua_setfield(L, -2, "syscall");
  if (dest) {
    lua_pushstring(L, dest);
    lua_setfield(L, -2, "dest");
  }
}

/* Raises an fs error. Does not return. */
static int raise_fs(lua_State *L, int err, const char *syscall, const char *path,
                    const char *dest) {
  push_fs_error(L, err, syscall, path, dest);
  return lua_error(L);
}

static const char *checkpath(lua_State *L, int idx) {
  size_t len;
  const char *p = luaL_checklstring(L, idx, &len);
  luaL_argcheck(L, strlen(p) == len, idx, "path contains a zero byte");
  return p;
}

/* {====== requests ======} */

static int file_append(lfile *f, const char *p, size_t n);

/* A write wrote part of its data: writes the rest. Returns 1 if a request was issued. */
static int write_more(freq *r);

static void on_fs(uv_fs_t *req) {
  freq *r = (freq *)req->data;
  lfile *f = r->file;
  int abandoned = r->base.op == NULL;
  if (r->kind == REQ_WRITE && req->result >= 0) {
    r->done_len += (size_t)req->result;
    if (r->done_len < r->len && req->result > 0 && write_more(r)) return;
  }
  if (f) {
    if (abandoned) {  /* the File is free again */
      f->inflight = NULL;
      r->file = NULL;
    }  /* else it stays busy until the deliver or cancel function ran */
    if (r->kind == REQ_READ) {
      /* keep what was read even when the reader was cancelled: the next read returns it */
      if (req->result > 0) {
        if (!file_append(f, r->data, (size_t)req->result)) req->result = UV_ENOMEM;
      } else if (req->result == 0) {
        f->eof = 1;
      }
    } else if (r->kind == REQ_WRITE && f->append && req->result >= 0) {
      f->eof = 0;
    }
    if (abandoned && f->idle_op) {  /* a task waits to use the file: it may go on */
      lasync_op *op = f->idle_op;
      f->idle_op = NULL;
      lasync_op_complete(op, 0);
    }
  }
  lasync__req_done(&r->base, 0);  /* the deliver functions read req->result */
}

static int write_more(freq *r) {
  uv_buf_t b = uv_buf_init(r->data + r->done_len, (unsigned int)(r->len - r->done_len));
  uv_loop_t *loop = r->req.loop;
  uv_file fd = (uv_file)r->req.file;
  int rc;
  uv_fs_req_cleanup(&r->req);
  rc = uv_fs_write(loop, &r->req, fd, &b, 1, -1, on_fs);
  if (rc < 0) {
    r->req.result = rc;
    return 0;
  }
  return 1;
}

/* The deliver or cancel function is done with r: its File may be used again. */
static void freq_release_file(freq *r) {
  lfile *f = r->file;
  if (f == NULL) return;
  f->inflight = NULL;
  r->file = NULL;
  if (f->idle_op) {
    lasync_op *op = f->idle_op;
    f->idle_op = NULL;
    lasync_op_complete(op, 0);
  }
}

/* The seam's release: what the request holds, and what nobody took. */
static void freq_release(lasync__req *b, int taken) {
  freq *r = (freq *)b;
  uv_loop_t *loop = r->req.loop;  /* (not b->rt's: in a host's loop, rt may be gone by now) */
  freq_release_file(r);
  if (r->kind == REQ_OPEN && r->req.result >= 0 && !r->fd_taken) {
    uv_fs_t c;  /* an open that nobody took succeeded: nobody will ever own this descriptor */
    uv_fs_close(loop, &c, (uv_file)r->req.result, NULL);
    uv_fs_req_cleanup(&c);
  }
  if (r->close_fd >= 0) {  /* its File was closed meanwhile and handed the descriptor over */
    uv_fs_t c;
    uv_fs_close(loop, &c, r->close_fd, NULL);
    uv_fs_req_cleanup(&c);
  }
  (void)taken;
  uv_fs_req_cleanup(&r->req);
  free(r->data);
}

/* The seam's cancel: the waiting task was cancelled. A cancelled write still writes all of
** its data (it is a copy): only reads, opens and path requests are taken off the queue. */
static void freq_cancel(lasync__req *b) {
  freq *r = (freq *)b;
  if (!b->done && r->kind != REQ_WRITE)
    uv_cancel((uv_req_t *)&r->req);  /* fails harmlessly once a thread runs it */
}

static const lasync__reqtype freq_type = {freq_cancel, freq_release, 1};

/* A new request of this kind; pushes its op. [-0, +1, e] */
static freq *freq_new(lua_State *L, int kind) {
  freq *r = (freq *)lasync__req_new(L, &freq_type, sizeof *r);
  r->kind = kind;
  r->close_fd = -1;
  r->req.data = r;
  return r;
}

/* Suspends the task on r, whose request was started with result rc. */
static int fs_await(lua_State *L, freq *r, int rc, lasync_deliver_fn deliver) {
  if (rc < 0) r->req.result = rc;  /* refused before queuing: the callback will not run */
  return lasync__req_await(L, &r->base, rc, deliver);
}

/* {====== path operations ======} */

static const char *mode_type(uint64_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "link";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    default: return "unknown";
  }
}

static void set_time(lua_State *L, const char *k, uv_timespec_t ts) {
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* Pushes the stat table. [-0, +1, m] */
static void push_stat(lua_State *L, const uv_stat_t *s) {
  lua_createtable(L, 0, 16);
  lua_pushstring(L, mode_type(s->st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", s->st_size);
  set_int(L, "mode", s->st_mode);
  set_int(L, "perm", s->st_mode & 07777);
  set_time(L, "mtime", s->st_mtim);
  set_time(L, "atime", s->st_atim);
  set_time(L, "ctime", s->st_ctim);
  set_time(L, "birthtime", s->st_birthtim);
  set_int(L, "uid", s->st_uid);
  set_int(L, "gid", s->st_gid);
  set_int(L, "nlink", s->st_nlink);
  set_int(L, "ino", s->st_ino);
  set_int(L, "dev", s->st_dev);
  set_int(L, "blocks", s->st_blocks);
  set_int(L, "blksize", s->st_blksize);
}

static const char *dirent_type(uv_dirent_type_t t) {
  switch (t) {
    case UV_DIRENT_FILE: return "file";
    case UV_DIRENT_DIR: return "directory";
    case UV_DIRENT_LINK: return "link";
    case UV_DIRENT_FIFO: return "fifo";
    case UV_DIRENT_SOCKET: return "socket";
    case UV_DIRENT_CHAR: return "char";
    case UV_DIRENT_BLOCK: return "block";
    default: return "unknown";
  }
}

/* Delivers a path operation; the path is argument 1 (and the destination argument 2 for
** rename). */
static int path_deliver(lua_State *L, void *data, int status) {
  freq *r = (freq *)data;
  ssize_t res = r->req.result;
  uv_fs_type type = r->req.fs_type;
  (void)status;
  if (res < 0) {
    const char *name = syscall_name(type);
    lasync__req_free(&r->base);
    return raise_fs(L, (int)res, name, lua_tostring(L, 1),
                    type == UV_FS_RENAME ? lua_tostring(L, 2) : NULL);
  }
  switch (type) {
    case UV_FS_STAT: case UV_FS_LSTAT:
      push_stat(L, &r->req.statbuf);
      break;
    case UV_FS_SCANDIR: {
      uv_dirent_t ent;
      int i = 0;
      lua_createtable(L, (int)res, 0);
      while (uv_fs_scandir_next(&r->req, &ent) != UV_EOF) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, ent.name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, dirent_type(ent.type));
        lua_setfield(L, -2, "type");
        lua_rawseti(L, -2, ++i);
      }
      break;
    }
    case UV_FS_OPEN: {
      lasync__req_free(&r->base);  /* not reached: open has its own deliver function */
      return 0;
    }
    default:
      lua_pushboolean(L, 1);
      break;
  }
  lasync__req_free(&r->base);
  return 1;
}

/* core.fs_stat(path [, follow = true]) -> table */
static int fs_stat(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = checkpath(L, 1);
  int follow = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  freq *r;
  lua_settop(L, 2);
  r = freq_new(L, REQ_PATH);
  return fs_await(L, r, follow ? uv_fs_stat(rt->loop, &r->req, path, on_fs)
                                   : uv_fs_lstat(rt->loop, &r->req, path, on_fs), path_deliver);
}

/* core.fs_scandir(path) -> {{name=, type=}, ...} */
static int fs_scandir(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = checkpath(L, 1);
  freq *r;
  lua_settop(L, 1);
  r = freq_new(L, REQ_PATH);
  return fs_await(L, r, uv_fs_scandir(rt->loop, &r->req, path, 0, on_fs), path_deliver);
}

/* core.fs_mkdir(path [, mode = 0777]) -> true */
static int fs_mkdir(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = checkpath(L, 1);
  lua_Integer mode = luaL_optinteger(L, 2, 0777);
  freq *r;
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "must be a permission mode (0 to 0o7777)");
  lua_settop(L, 2);
  r = freq_new(L, REQ_PATH);
  return fs_await(L, r, uv_fs_mkdir(rt->loop, &r->req, path, (int)mode, on_fs),
                  path_deliver);
}

/* core.fs_unlink(path) / core.fs_rmdir(path) -> true */
static int fs_unlink_or_rmdir(lua_State *L, int rmdir) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = checkpath(L, 1);
  freq *r;
  lua_settop(L, 1);
  r = freq_new(L, REQ_PATH);
  return fs_await(L, r, rmdir ? uv_fs_rmdir(rt->loop, &r->req, path, on_fs)
                                  : uv_fs_unlink(rt->loop, &r->req, path, on_fs), path_deliver);
}

static int fs_unlink(lua_State *L) { return fs_unlink_or_rmdir(L, 0); }
static int fs_rmdir(lua_State *L) { return fs_unlink_or_rmdir(L, 1); }

/* core.fs_rename(from, to) -> true */
static int fs_rename(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *from = checkpath(L, 1), *to = checkpath(L, 2);
  freq *r;
  lua_settop(L, 2);
  r = freq_new(L, REQ_PATH);
  return fs_await(L, r, uv_fs_rename(rt->loop, &r->req, from, to, on_fs), path_deliver);
}

/* {====== File ======} */

static lfile *tofile(lua_State *L, int idx) {
  lfile *f = (lfile *)lasync__checkclass(L, lasync__rt(L), idx, LASYNC_CLS_FILE);
  if (f->fd < 0) luaL_error(L, "attempt to use a closed file");
  return f;
}

static const char *file_path(lua_State *L, int idx) {
  const char *p;
  lua_getiuservalue(L, idx, 1);
  p = lua_tostring(L, -1);
  lua_pop(L, 1);  /* the userdata keeps the string alive */
  return p ? p : "?";
}

/* Raises an fs error for the File at stack index 1. Does not return. */
static int raise_file(lua_State *L, int err, const char *syscall) {
  return raise_fs(L, err, syscall, file_path(L, 1), NULL);
}

static int file_append(lfile *f, const char *p, size_t n) {
  if (f->off == f->len) f->off = f->len = 0;
  if (f->cap - f->len < n) {
    if (f->off > 0) {
      memmove(f->buf, f->buf + f->off, f->len - f->off);
      f->len -= f->off;
      f->off = 0;
    }
    if (f->cap - f->len < n) {
      size_t cap = f->cap ? f->cap : CHUNK;
      char *nb;
      while (cap - f->len < n) cap *= 2;
      nb = (char *)realloc(f->buf, cap);
      if (nb == NULL) return 0;
      f->buf = nb;
      f->cap = cap;
    }
  }
  memcpy(f->buf + f->len, p, n);
  f->len += n;
  return 1;
}

/* Drops the read-ahead, moving the descriptor's offset back to the logical position. */
static int drop_readahead(lfile *f) {
  if (f->len > f->off) {
    if (lseek(f->fd, -(off_t)(f->len - f->off), SEEK_CUR) < 0) return -errno;
  }
  f->off = f->len = 0;
  f->eof = 0;
  return 0;
}

/* Closes f now, or hands its descriptor to the request still running on it. */
static void file_do_close(lfile *f) {
  if (f->fd < 0) return;
  if (f->inflight) {
    f->inflight->close_fd = f->fd;
    f->inflight->file = NULL;
    f->inflight = NULL;
  } else {
    uv_fs_t c;
    uv_fs_close(f->rt->loop, &c, f->fd, NULL);  /* synchronous: close(2) does not block */
    uv_fs_req_cleanup(&c);
  }
  f->fd = -1;
  free(f->buf);
  f->buf = NULL;
  f->cap = f->off = f->len = 0;
  if (f->idle_op) {  /* a task waited to use it: it sees the file closed */
    lasync_op *op = f->idle_op;
    f->idle_op = NULL;
    lasync_op_complete(op, 0);
  }
}

/* Waiting until an abandoned request on the file ends, then calling the method again. */
typedef struct idlewait {
  lfile *f;
  lasync_op *op;
  lua_CFunction again;
  int nargs;
} idlewait;

static int idle_deliver(lua_State *L, void *data, int status) {
  idlewait *w = (idlewait *)data;
  lua_CFunction again = w->again;
  int nargs = w->nargs;
  (void)status;
  free(w);
  lua_settop(L, nargs);
  return again(L);
}

static void idle_cancel(void *data) {
  idlewait *w = (idlewait *)data;
  if (w->f->idle_op == w->op) w->f->idle_op = NULL;
  free(w);
}

/* Called by a method when f->inflight is set. Raises if another task uses the file; else
** waits for the abandoned request and calls `again` with the same arguments. */
static int wait_idle(lua_State *L, lfile *f, lua_CFunction again) {
  int nargs = lua_gettop(L);
  lasync_op *op;
  idlewait *w;
  if (f->inflight->base.op != NULL || f->idle_op != NULL)
    return luaL_error(L, "another task is already using this file");
  op = lasync_op_new(L);
  w = (idlewait *)malloc(sizeof *w);
  if (w == NULL) return luaL_error(L, "not enough memory");
  w->f = f;
  w->op = op;
  w->again = again;
  w->nargs = nargs;
  f->idle_op = op;
  return lasync_op_await(L, op, w, idle_deliver, idle_cancel);
}

/* {------ read ------} */

static int file_read(lua_State *L);
static int read_step(lua_State *L, lfile *f);

static int read_deliver(lua_State *L, void *data, int status) {
  freq *r = (freq *)data;
  ssize_t res = r->req.result;
  lfile *f = (lfile *)lua_touserdata(L, 1);
  (void)status;
  lasync__req_free(&r->base);
  lua_pop(L, 1);  /* the op */
  if (f->fd < 0) return luaL_error(L, "attempt to use a closed file");
  if (res < 0) return raise_file(L, (int)res, "read");
  f->nargs = lua_gettop(L);  /* the formats are the arguments of this call */
  return read_step(L, f);
}

/* Reads more into f's buffer (at least f->want bytes are asked for), then goes on. */
static int fill(lua_State *L, lfile *f) {
  lasync__runtime *rt = lasync__rt(L);
  size_t n = f->want < CHUNK ? CHUNK : f->want;
  freq *r;
  uv_buf_t b;
  if (n > MAXREAD) n = MAXREAD;  /* read(1e9) on a small file must not allocate 1 GB */
  r = freq_new(L, REQ_READ);
  r->data = (char *)malloc(n);
  if (r->data == NULL) {
    lasync__req_free(&r->base);
    return luaL_error(L, "not enough memory");
  }
  r->file = f;
  f->inflight = r;
  b = uv_buf_init(r->data, (unsigned int)n);
  return fs_await(L, r, uv_fs_read(rt->loop, &r->req, f->fd, &b, 1, -1, on_fs),
                  read_deliver);
}

static int isnumchar(int c) {
  return isxdigit(c) || c == 'x' || c == 'X' || c == '.' || c == '+' || c == '-' ||
         c == 'p' || c == 'P';
}

/* read("n"): 1 pushed a number, -1 pushed nil (no numeral), 0 needs more data. */
static int read_number(lua_State *L, lfile *f, size_t *pos) {
  char num[MAXNUM + 1];
  size_t i = 0, k, avail;
  const char *p;
  int hex = 0, count = 0;
  while (*pos < f->len && isspace((unsigned char)f->buf[*pos])) (*pos)++;
  avail = f->len - *pos;
  p = f->buf ? f->buf + *pos : "";
  for (k = 0; k < avail && k <= MAXNUM && isnumchar((unsigned char)p[k]); k++) {}
  if (k == avail && k <= MAXNUM && !f->eof) {
    f->want = CHUNK;
    return 0;
  }
  /* an optional sign, 0x, digits, a point, digits, an exponent (as liolib's l_getn) */
#define ACCEPT(cond) ((i < k && i < MAXNUM && (cond)) ? (num[i] = p[i], i++, 1) : 0)
  (void)ACCEPT(p[i] == '-' || p[i] == '+');
  if (ACCEPT(p[i] == '0')) {
    if (ACCEPT(p[i] == 'x' || p[i] == 'X')) hex = 1;
    else count = 1;
  }
  while (ACCEPT(hex ? isxdigit((unsigned char)p[i]) : isdigit((unsigned char)p[i]))) count++;
  if (ACCEPT(p[i] == '.'))
    while (ACCEPT(hex ? isxdigit((unsigned char)p[i]) : isdigit((unsigned char)p[i]))) count++;
  if (count > 0 && ACCEPT(hex ? (p[i] == 'p' || p[i] == 'P') : (p[i] == 'e' || p[i] == 'E'))) {
    (void)ACCEPT(p[i] == '-' || p[i] == '+');
    while (ACCEPT(isdigit((unsigned char)p[i]))) {}
  }
#undef ACCEPT
  num[i] = '\0';
  *pos += i;
  if (lua_stringtonumber(L, num) != 0) return 1;
  lua_pushnil(L);
  return -1;
}

/* Tries format i at *pos: 1 pushed a value, -1 pushed nil (failure: stop), 0 needs more
** data. Advances *pos past what it used. */
static int read_one(lua_State *L, lfile *f, int i, size_t *pos) {
  size_t avail = f->len - *pos;
  const char *p = f->buf ? f->buf + *pos : "";
  if (lua_type(L, i) == LUA_TNUMBER) {
    size_t n = (size_t)lua_tointeger(L, i);
    if (avail >= n && (n > 0 || avail > 0)) {
      lua_pushlstring(L, p, n);
      *pos += n;
      return 1;
    }
    if (!f->eof) {
      f->want = n - avail;
      return 0;
    }
    if (avail == 0) {
      lua_pushnil(L);
      return -1;
    }
    lua_pushlstring(L, p, avail);
    *pos += avail;
    return 1;
  } else {
    const char *fmt = lua_tostring(L, i);
    if (*fmt == '*') fmt++;
    switch (*fmt) {
      case 'n':
        return read_number(L, f, pos);
      case 'a':
        if (!f->eof) {
          f->want = avail < CHUNK ? CHUNK : avail;  /* doubles the buffer each time */
          return 0;
        }
        lua_pushlstring(L, p, avail);
        *pos += avail;
        return 1;
      default: {  /* 'l' or 'L' */
        const char *nl = avail ? memchr(p, '\n', avail) : NULL;
        if (nl) {
          size_t n = (size_t)(nl - p);
          lua_pushlstring(L, p, *fmt == 'L' ? n + 1 : n);
          *pos += n + 1;
          return 1;
        }
        if (!f->eof) {
          f->want = avail < CHUNK ? CHUNK : avail;  /* a long line: double, rescan less */
          return 0;
        }
        if (avail == 0) {
          lua_pushnil(L);
          return -1;
        }
        lua_pushlstring(L, p, avail);
        *pos += avail;
        return 1;
      }
    }
  }
}

/* Reads every format from the buffer, or, when the buffer runs out first, reads more and
** starts again: the buffer is consumed only when the whole call succeeds, so a read that is
** cancelled while it waits for data consumes nothing. */
static int read_step(lua_State *L, lfile *f) {
  size_t pos = f->off;
  int i;
  lua_settop(L, f->nargs);
  for (i = 2; i <= f->nargs; i++) {
    int r = read_one(L, f, i, &pos);
    if (r == 0) {
      lua_settop(L, f->nargs);
      return fill(L, f);
    }
    if (r < 0) break;
  }
  f->off = pos;
  return lua_gettop(L) - f->nargs;
}

static void check_formats(lua_State *L, int first, int last) {
  int i;
  for (i = first; i <= last; i++) {
    if (lua_type(L, i) == LUA_TNUMBER) {
      luaL_argcheck(L, lua_isinteger(L, i) && lua_tointeger(L, i) >= 0, i,
                    "must be a non-negative integer");
    } else {
      const char *p = luaL_checkstring(L, i);
      if (*p == '*') p++;
      luaL_argcheck(L, *p && strchr("nalL", *p) && p[1] == '\0', i, "invalid format");
    }
  }
}

/* f:read(...) -> one value per format ("n", "a", "l", "L", or a byte count; default "l") */
static int file_read(lua_State *L) {
  lfile *f = tofile(L, 1);
  if (lua_gettop(L) == 1) lua_pushliteral(L, "l");
  luaL_checkstack(L, lua_gettop(L) + LUA_MINSTACK, "too many arguments");
  check_formats(L, 2, lua_gettop(L));
  if (!f->readable) return raise_file(L, UV_EBADF, "read");
  if (f->inflight) return wait_idle(L, f, file_read);
  f->eof = 0;  /* each call looks at the file again, as io's read does */
  f->nargs = lua_gettop(L);
  return read_step(L, f);
}

/* the iterator of f:lines(...): upvalues rt, file, formats... */
static int lines_next(lua_State *L) {
  int i, n = (int)lua_tointeger(L, lua_upvalueindex(3));
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  for (i = 1; i <= n; i++) lua_pushvalue(L, lua_upvalueindex(3 + i));
  return file_read(L);
}

/* f:lines(...) -> iterator (formats as f:read; default "l") */
static int file_lines(lua_State *L) {
  int n = lua_gettop(L) - 1;
  (void)tofile(L, 1);
  luaL_argcheck(L, n <= 250, 252, "too many arguments");
  check_formats(L, 2, n + 1);
  lua_pushlightuserdata(L, lasync__rt(L));
  lua_pushvalue(L, 1);
  lua_pushinteger(L, n);
  lua_rotate(L, 2, 3);  /* rt, file, n, formats... */
  lua_pushcclosure(L, lines_next, 3 + n);
  return 1;
}

/* {------ write, seek, close ------} */

static int write_deliver(lua_State *L, void *data, int status) {
  freq *r = (freq *)data;
  ssize_t res = r->req.result;
  (void)status;
  lasync__req_free(&r->base);
  if (res < 0) return raise_file(L, (int)res, "write");
  lua_pushvalue(L, 1);
  return 1;
}

/* A malloc'd copy of the strings at first..last (total bytes in all; at least 1 byte is
** allocated), for a thread-pool write that must outlive a cancel; NULL if out of memory. */
static char *join_args(lua_State *L, int first, int last, size_t total) {
  char *buf = (char *)malloc(total ? total : 1), *p = buf;
  int i;
  if (buf == NULL) return NULL;
  for (i = first; i <= last; i++) {
    size_t len;
    const char *str = lua_tolstring(L, i, &len);
    memcpy(p, str, len);
    p += len;
  }
  return buf;
}

/* f:write(...) -> f (strings or numbers) */
static int file_write(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  lfile *f = tofile(L, 1);
  int i, n = lua_gettop(L), err;
  size_t total = 0, len;
  freq *r;
  uv_buf_t b;
  for (i = 2; i <= n; i++) total += (luaL_checklstring(L, i, &len), len);
  if (!f->writable) return raise_file(L, UV_EBADF, "write");
  if (f->inflight) return wait_idle(L, f, file_write);
  if ((err = drop_readahead(f)) < 0) return raise_file(L, err, "lseek");
  if (total == 0) {
    lua_settop(L, 1);
    return 1;
  }
  r = freq_new(L, REQ_WRITE);
  r->data = join_args(L, 2, n, total);  /* the thread pool reads a copy that outlives a cancel */
  if (r->data == NULL) {
    lasync__req_free(&r->base);
    return luaL_error(L, "not enough memory");
  }
  r->len = total;
  r->file = f;
  f->inflight = r;
  b = uv_buf_init(r->data, (unsigned int)total);
  return fs_await(L, r, uv_fs_write(rt->loop, &r->req, f->fd, &b, 1, -1, on_fs),
                  write_deliver);
}

/* f:seek([whence = "cur"] [, offset = 0]) -> position */
static int file_seek(lua_State *L) {
  static const char *const names[] = {"set", "cur", "end", NULL};
  static const int modes[] = {SEEK_SET, SEEK_CUR, SEEK_END};
  lfile *f = tofile(L, 1);
  int op = luaL_checkoption(L, 2, "cur", names);
  lua_Integer offset = luaL_optinteger(L, 3, 0);
  off_t pos;
  if (f->inflight) return wait_idle(L, f, file_seek);
  if (op == 1) offset -= (lua_Integer)(f->len - f->off);  /* the logical position */
  pos = lseek(f->fd, (off_t)offset, modes[op]);
  if (pos < 0) return raise_file(L, -errno, "lseek");
  f->off = f->len = 0;
  f->eof = 0;
  lua_pushinteger(L, (lua_Integer)pos);
  return 1;
}

/* f:close() -> true */
static int file_close(lua_State *L) {
  file_do_close(tofile(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* f:flush() -> f: writes are not buffered, so there is nothing to do */
static int file_flush(lua_State *L) {
  (void)tofile(L, 1);
  lua_settop(L, 1);
  return 1;
}

/* __gc and __close (a closed File is fine) */
static int file__gc(lua_State *L) {
  file_do_close((lfile *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_FILE));
  return 0;
}

static int file__tostring(lua_State *L) {
  lfile *f = (lfile *)lasync__checkclass(L, lasync__rt(L), 1, LASYNC_CLS_FILE);
  if (f->fd < 0)
    lua_pushfstring(L, "lasync.fs.File (closed)");
  else
    lua_pushfstring(L, "lasync.fs.File (%s)", file_path(L, 1));
  return 1;
}

/* {------ open ------} */

static int open_deliver(lua_State *L, void *data, int status) {
  freq *r = (freq *)data;
  ssize_t res = r->req.result;
  int flags = (int)lua_tointeger(L, 3);
  lfile *f;
  (void)status;
  r->fd_taken = 1;  /* the File below owns it */
  lasync__req_free(&r->base);
  if (res < 0) return raise_fs(L, (int)res, "open", lua_tostring(L, 1), NULL);
  /* nothing below raises before the descriptor is owned by the userdata, except memory
  ** errors (and then the fd leaks, as the state is in trouble anyway) */
  f = (lfile *)lua_newuserdatauv(L, sizeof *f, 1);
  memset(f, 0, sizeof *f);
  f->rt = lasync__rt(L);
  f->fd = (uv_file)res;
  f->readable = (flags & O_ACCMODE) != O_WRONLY;
  f->writable = (flags & O_ACCMODE) != O_RDONLY;
  f->append = (flags & O_APPEND) != 0;
  lasync__setclass(L, f->rt, LASYNC_CLS_FILE);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* Mode strings like io.open's: r w a, then any of + b x (x only with w), each at most once. */
static int parse_mode(const char *m) {
  int flags, plus = 0, b = 0, x = 0;
  switch (*m++) {
    case 'r': flags = 0; break;
    case 'w': flags = O_CREAT | O_TRUNC; break;
    case 'a': flags = O_CREAT | O_APPEND; break;
    default: return -1;
  }
  for (; *m; m++) {
    if (*m == '+' && !plus) plus = 1;
    else if (*m == 'b' && !b) b = 1;
    else if (*m == 'x' && !x && (flags & O_TRUNC)) x = 1;
    else return -1;
  }
  if (x) flags |= O_EXCL;
  if (plus) flags |= O_RDWR;
  else flags |= (flags & (O_CREAT)) ? O_WRONLY : O_RDONLY;
  return flags | O_CLOEXEC;
}

/* core.fs_open(path [, mode = "r"]) -> File */
static int fs_open(lua_State *L) {
  lasync__runtime *rt = lasync__rt(L);
  const char *path = checkpath(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  int flags = parse_mode(mode);
  freq *r;
  luaL_argcheck(L, flags >= 0, 2, "invalid mode (expected r, w, a, r+, w+, a+, wx, w+x, "
                "optionally with b)");
  lua_settop(L, 2);
  lua_pushinteger(L, flags);  /* 3: for open_deliver */
  r = freq_new(L, REQ_OPEN);
  return fs_await(L, r, uv_fs_open(rt->loop, &r->req, path, flags, 0666, on_fs),
                  open_deliver);
}

/* {====== whole files in one thread-pool job ======} */

/* read_file and write_file do open, read or write, and close in one uv_queue_work job: one
** trip to the thread pool instead of three or four. Same lifetime rules as freq. */
typedef struct wjob {
  lasync__req base;            /* must be first */
  uv_work_t work;
  char *path;
  char *data;                  /* read: the content; write: a copy of the data */
  size_t len, cap;
  int flags;                   /* open flags; O_WRONLY for a write */
  int err;                     /* a libuv error code, or 0 */
  const char *syscall;         /* the call that failed */
} wjob;

static void wjob_release(lasync__req *b, int taken) {
  wjob *j = (wjob *)b;
  (void)taken;  /* the deliver function copies the content into Lua */
  free(j->path);
  free(j->data);
}

static void wjob_cancel(lasync__req *b) {
  if (!b->done) uv_cancel((uv_req_t *)&((wjob *)b)->work);  /* fails harmlessly once a thread
                                                               runs it */
}

static const lasync__reqtype wjob_type = {wjob_cancel, wjob_release, 1};

static void whole_work(uv_work_t *w) {
  wjob *j = (wjob *)w->data;
  int fd;
  do fd = open(j->path, j->flags, 0666); while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    j->err = uv_translate_sys_error(errno);
    j->syscall = "open";
    return;
  }
  if ((j->flags & O_ACCMODE) == O_RDONLY) {
    struct stat st;
    size_t want = (fstat(fd, &st) == 0 && st.st_size > 0) ? (size_t)st.st_size + 1 : CHUNK;
    for (;;) {
      ssize_t n;
      if (j->len == j->cap) {  /* full: the file is longer than its size said, or grew */
        size_t cap = j->cap ? j->cap * 2 : want;
        char *nb;
        nb = (char *)realloc(j->data, cap);
        if (nb == NULL) {
          j->err = UV_ENOMEM;
          j->syscall = "read";
          break;
        }
        j->data = nb;
        j->cap = cap;
      }
      n = read(fd, j->data + j->len, j->cap - j->len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        j->err = uv_translate_sys_error(errno);
        j->syscall = "read";
        break;
      }
      if (n == 0) break;
      j->len += (size_t)n;
    }
  } else {
    size_t off = 0;
    while (off < j->len) {
      ssize_t n = write(fd, j->data + off, j->len - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        j->err = uv_translate_sys_error(errno);
        j->syscall = "write";
        break;
      }
      off += (size_t)n;
    }
  }
  if (close(fd) < 0 && j->err == 0 && errno != EINTR) {
    j->err = uv_translate_sys_error(errno);  /* a delayed write error (NFS, quota) */
    j->syscall = "close";
  }
}

static void whole_after(uv_work_t *w, int status) {
  wjob *j = (wjob *)w->data;
  if (status < 0 && j->err == 0) {  /* UV_ECANCELED: taken off the queue */
    j->err = status;
    j->syscall = "open";
  }
  lasync__req_done(&j->base, 0);
}

static int whole_deliver(lua_State *L, void *data, int status) {
  wjob *j = (wjob *)data;
  int err = j->err;
  const char *syscall = j->syscall;
  int reading = (j->flags & O_ACCMODE) == O_RDONLY;
  (void)status;
  if (err < 0) {
    lasync__req_free(&j->base);
    return raise_fs(L, err, syscall, lua_tostring(L, 1), NULL);
  }
  if (reading)
    lua_pushlstring(L, j->data ? j->data : "", j->len);
  else
    lua_pushboolean(L, 1);
  lasync__req_free(&j->base);
  return 1;
}

static int whole_start(lua_State *L, wjob *j) {
  int rc;
  j->work.data = j;
  rc = uv_queue_work(lasync__rt(L)->loop, &j->work, whole_work, whole_after);
  if (rc < 0) {
    j->err = rc;
    j->syscall = "open";
  }
  return lasync__req_await(L, &j->base, rc, whole_deliver);
}

/* A new job; pushes its op. [-0, +1, e] */
static wjob *wjob_new(lua_State *L, const char *path, int flags) {
  wjob *j = (wjob *)lasync__req_new(L, &wjob_type, sizeof *j);
  j->path = strdup(path);
  if (j->path == NULL) {
    lasync__req_free(&j->base);
    luaL_error(L, "not enough memory");
    return NULL;  /* not reached */
  }
  j->flags = flags | O_CLOEXEC;
  return j;
}

/* core.fs_read_file(path) -> string */
static int fs_read_file(lua_State *L) {
  const char *path = checkpath(L, 1);
  lua_settop(L, 1);
  return whole_start(L, wjob_new(L, path, O_RDONLY));
}

/* core.fs_write_file(path, append, data, ...) -> true */
static int fs_write_file(lua_State *L) {
  const char *path = checkpath(L, 1);
  int append = lua_toboolean(L, 2), i, n = lua_gettop(L);
  size_t total = 0, len;
  wjob *j;
  for (i = 3; i <= n; i++) total += (luaL_checklstring(L, i, &len), len);
  j = wjob_new(L, path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC));
  j->data = join_args(L, 3, n, total);
  if (j->data == NULL) {
    lasync__req_free(&j->base);
    return luaL_error(L, "not enough memory");
  }
  j->len = total;
  return whole_start(L, j);
}

void lasync__open_fs(lua_State *L, lasync__runtime *rt) {
  static const luaL_Reg file_methods[] = {
    {"read", file_read}, {"write", file_write}, {"seek", file_seek}, {"lines", file_lines},
    {"close", file_close}, {"flush", file_flush}, {NULL, NULL}
  };
  static const luaL_Reg file_meta[] = {
    {"__gc", file__gc}, {"__close", file__gc}, {"__tostring", file__tostring}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"fs_open", fs_open}, {"fs_stat", fs_stat}, {"fs_scandir", fs_scandir},
    {"fs_mkdir", fs_mkdir}, {"fs_unlink", fs_unlink}, {"fs_rmdir", fs_rmdir},
    {"fs_rename", fs_rename}, {"fs_read_file", fs_read_file},
    {"fs_write_file", fs_write_file}, {NULL, NULL}
  };
  lua_pushlightuserdata(L, rt);
  lasync__newclass(L, rt, LASYNC_CLS_FILE, LASYNC_FILE_MT, file_methods, file_meta);
  luaL_setfuncs(L, funcs, 1);
}
