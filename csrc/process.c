/* placeholder */
#include "internal.h"
void lasync__open_process(lua_State *L, lasync__runtime *rt) { (void)L; (void)rt; }
