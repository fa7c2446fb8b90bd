-- docs/check_links.lua: fails on a dead relative link in the documentation.
--
--   lua5.4 docs/check_links.lua [-v] [file.md ...]
--
-- Run it from the root of the checkout. Without file arguments it checks README.md and every
-- docs/**/*.md. It looks at inline links and images, `[text](path)`, `[text](path#anchor)` and
-- `[text](#anchor)`, and at reference definitions, `[name]: path`; it skips links with a scheme
-- (http:, https:, mailto:, ...), links inside fenced code blocks and inside `code spans`.
-- A link is dead when its target (relative to the file that holds the link) does not exist,
-- or when it has an anchor and the target is a Markdown file (or a directory, meaning its
-- README.md) with no heading that gets that anchor. Anchors follow GitHub's rules: the
-- heading's text (inline markup removed) in lower case, every character that is not a letter,
-- digit, space, `-` or `_` dropped, each space turned into `-`; a heading whose anchor was
-- already taken in the same file gets `-1`, `-2`, ... appended (`### s:peer / s:sock` ->
-- `speer--ssock`, a second `## Example` -> `example-1`). `<a name="x">` / `<a id="x">` tags
-- count as anchors too.
--
-- Prints one line per dead link, `file:line: dead link target (reason)`, and exits with
-- status 1 when there is any.

local C = dofile((arg[0]:match("^(.*)/") or ".") .. "/check_common.lua")
local list, read = C.list, C.read
local verbose, targets = C.args(arg)

if #targets == 0 then
  targets[1] = "README.md"
  for _, f in ipairs(list("find docs -name '*.md' -type f 2>/dev/null | LC_ALL=C sort")) do
    targets[#targets + 1] = f
  end
end

-- "file", "dir" or nil.
local kinds = {}
local function kind_of(path)
  if kinds[path] == nil then
    local f = io.open(path, "rb")
    if not f then
      kinds[path] = false
    else
      local ok, _, code = f:read(0)
      f:close()
      kinds[path] = (ok == nil and code == 21) and "dir" or "file" -- 21: EISDIR
    end
  end
  return kinds[path] or nil
end

-- Calls fn(line_number, line) for each line of a Markdown file outside fenced code blocks.
local function prose_lines(text, fn)
  local n, fence = 0, nil
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    local indent, marks = line:match("^( *)(```+)")
    if not marks then indent, marks = line:match("^( *)(~~~+)") end
    if fence then
      -- A closing fence: the same character, at least as long, nothing else on the line.
      if marks and #indent < 4 and marks:sub(1, 1) == fence:sub(1, 1) and #marks >= #fence
         and line:match("^ *[`~]+%s*$") then
        fence = nil
      end
    elseif marks and #indent < 4
           and not (marks:sub(1, 1) == "`" and line:find("`", #indent + #marks + 1, true)) then
      fence = marks                    -- (an info string after ``` may not contain a backtick)
    else
      fn(n, line)
    end
  end
end

-- The text of a heading as GitHub renders it (inline markup removed).
local function heading_text(s)
  s = s:gsub("%s+#+%s*$", ""):gsub("^%s+", ""):gsub("%s+$", "")
  s = s:gsub("!?%[([^]]*)%]%b()", "%1")      -- links and images: their text
  s = s:gsub("<[^>]*>", "")                  -- inline HTML tags
  s = s:gsub("\\(%p)", "%1")                 -- backslash escapes
  s = s:gsub("`", "")
  return s
end

-- UTF-8 punctuation and symbols GitHub drops from anchors (letters and digits are kept).
local function keep_codepoint(c)
  if c < 0x80 then return nil end                            -- handled by the ASCII rule
  if c >= 0xA0 and c <= 0xBF then                            -- Latin-1 punctuation, symbols
    return c == 0xAA or c == 0xB2 or c == 0xB3 or c == 0xB5 or c == 0xB9 or c == 0xBA
        or (c >= 0xBC and c <= 0xBE)
  end
  if c == 0xD7 or c == 0xF7 then return false end            -- multiplication, division
  if c >= 0x2000 and c <= 0x2BFF then return false end       -- punctuation, arrows, math, ...
  if c >= 0x3000 and c <= 0x303F then return false end       -- CJK punctuation
  if c >= 0x1F000 then return false end                      -- emoji
  return true
end

local function slugify(text)
  local out = {}
  for _, c in utf8.codes(text, true) do
    if c < 0x80 then
      local ch = string.char(c)
      if ch:match("[%w_-]") then
        out[#out + 1] = ch:lower()
      elseif ch == " " then
        out[#out + 1] = "-"
      end
    elseif keep_codepoint(c) then
      out[#out + 1] = utf8.char(c):lower()                   -- lower() leaves non-ASCII alone
    end
  end
  return table.concat(out)
end

-- The set of anchors of a Markdown file, computed once per file.
local anchor_cache = {}
local function anchors_of(path)
  local set = anchor_cache[path]
  if set then return set end
  set = {}
  local seen = {}     -- slug -> times it was taken (github-slugger's occurrences)
  local ok, text = pcall(read, path)
  if not ok then text = "" end
  prose_lines(text, function(_, line)
    local body = line:match("^ ? ? ?#+%s+(.*)$") or line:match("^ ? ? ?#+$")
    if body and #line:match("^ *(#+)") <= 6 then
      local slug = slugify(heading_text(body))
      local original = slug
      while seen[slug] do
        seen[original] = seen[original] + 1
        slug = original .. "-" .. seen[original]
      end
      seen[slug] = 0
      set[slug] = true
    end
    for tag in line:gmatch("<[aA]%s[^>]*>") do
      for attr, name in tag:gmatch("%f[%w]([%w-]+)%s*=%s*[\"']([^\"']*)[\"']") do
        if attr == "name" or attr == "id" then set[name] = true end
      end
    end
  end)
  anchor_cache[path] = set
  return set
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Joins a relative link path onto a directory and removes "." and ".." components.
local function resolve(dir, rel)
  local parts = {}
  local full = rel:sub(1, 1) == "/" and rel:sub(2) or (dir .. "/" .. rel)
  for part in full:gmatch("[^/]+") do
    if part == ".." then
      if #parts > 0 and parts[#parts] ~= ".." then
        parts[#parts] = nil
      else
        parts[#parts + 1] = ".."
      end
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return #parts == 0 and "." or table.concat(parts, "/")
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local dead, checked = {}, 0

local function check(file, n, target)
  target = target:match("^<(.*)>$") or target
  if target:match("^%a[%w+.-]*:") then return end             -- http:, https:, mailto:, ...
  checked = checked + 1
  local path, anchor = target:match("^([^#]*)#(.*)$")
  if not path then path = target end
  path = unescape(path)
  local where = file
  if path ~= "" then
    where = resolve(dirname(file), path)
    local kind = kind_of(where)
    if not kind then
      dead[#dead + 1] = ("%s:%d: dead link %s (no such file %s)"):format(file, n, target, where)
      return
    end
    if kind == "dir" then where = where .. "/README.md" end
  end
  if anchor and anchor ~= "" then
    if where:match("%.md$") or where:match("%.markdown$") then
      if not anchors_of(where)[unescape(anchor)] then
        dead[#dead + 1] = ("%s:%d: dead link %s (no heading #%s in %s)"):format(file, n, target,
                                                                            anchor, where)
        return
      end
    end
  end
  if verbose then io.write(("ok   %s:%d: %s\n"):format(file, n, target)) end
end

for _, file in ipairs(targets) do
  local ok, text = pcall(read, file)
  if not ok then
    dead[#dead + 1] = ("%s: cannot read the file"):format(file)
  else
    prose_lines(text, function(n, line)
      line = line:gsub("(`+)(.-)%1", "")                        -- code spans
      local def = line:match("^ ? ? ?%[[^]]+%]:%s*(%S+)")        -- [name]: target
      if def then check(file, n, def) end
      -- ](target) or ](target "title"): the link's text may have begun on an earlier line.
      for target in line:gmatch("%]%(%s*(<[^>]*>)") do check(file, n, target) end
      for target in line:gmatch("%]%(%s*([^%s<)][^%s)]*)") do check(file, n, target) end
    end)
  end
end

for _, line in ipairs(dead) do io.write(line, "\n") end
io.write(("%d link(s) checked in %d file(s), %d dead\n"):format(checked, #targets, #dead))
os.exit(#dead == 0 and 0 or 1)
