-- luacheck configuration (Debian: lua-check)
std = "lua54"
max_line_length = 110
files["spec"] = { std = "+busted" }
files["bench"] = { globals = {} }
exclude_files = { "build", "build-asan" }
