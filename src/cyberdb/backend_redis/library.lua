#!lua name=cyberdb_v1
-- CyberDB's Redis function library (see docs/redis-backend.md).  Every function touches the keys of one table
-- (one hash slot), so it is atomic and cluster-safe.  Table keys, in this order:
--   dict: KEYS = m (kind), v (canon -> value), k (canon -> key, when they differ), o (order zset), n (counter)
--   list: KEYS = m (kind), l (the list), n (version counter)
--   registry: KEYS = t (name -> [kind, tag]), r (order zset), c (counter)
-- Errors are "CYBER <CODE> ..." replies; the client turns each code into Python's exception.
-- Values are opaque bytes (the client's codec); list elements carry their equality canon (canon.element).

local TOMB = '\193'  -- 0xC1: never a stored element (msgpack never emits it; a pair element is longer)
local CHUNK = 1000   -- arguments per RPUSH/unpack (Lua's unpack limit is ~8000)

local function fail(code) error({err = 'CYBER ' .. code}) end

local function check(m, kind)
  local got = redis.call('GET', m)
  if not got then fail('TNF') end
  if got ~= kind then fail('WTT ' .. got) end
end

local function push(key, items, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + CHUNK - 1, last)
    redis.call('RPUSH', key, unpack(items, i, j))
    i = j + 1
  end
end

-- ---- numbers: the incr fast path ------------------------------------------------------------------------------
-- The codec's msgpack for an int below 2^53 in magnitude and for a float64, read and written byte for byte as
-- Python's msgpack does.  Anything else (bool, Decimal, big int, a non-number, an inf/nan result) returns nil
-- and the client does a compare-and-set with Python's own arithmetic instead.

local LIMIT = 9007199254740992  -- 2^53: Lua numbers are doubles
local TWO32 = 4294967296

local function be(s, i, len)
  local v = 0
  for j = i, i + len - 1 do v = v * 256 + string.byte(s, j) end
  return v
end

local function num_of(s)  -- value, is_float; or nil
  local n, b = #s, string.byte(s, 1)
  if n == 1 and b <= 127 then return b, false end
  if n == 1 and b >= 224 then return b - 256, false end
  if b == 203 and n == 9 then return (struct.unpack('>d', s, 2)), true end
  if b == 204 and n == 2 then return be(s, 2, 1), false end
  if b == 205 and n == 3 then return be(s, 2, 2), false end
  if b == 206 and n == 5 then return be(s, 2, 4), false end
  if b == 208 and n == 2 then local v = be(s, 2, 1) if v >= 128 then v = v - 256 end return v, false end
  if b == 209 and n == 3 then local v = be(s, 2, 2) if v >= 32768 then v = v - 65536 end return v, false end
  if b == 210 and n == 5 then local v = be(s, 2, 4) if v >= 2147483648 then v = v - TWO32 end return v, false end
  if (b == 207 or b == 211) and n == 9 then
    local hi = be(s, 2, 4)
    if b == 211 and hi >= 2147483648 then hi = hi - TWO32 end
    if hi >= 2097152 or hi < -2097152 then return nil end  -- |value| >= 2^53
    return hi * TWO32 + be(s, 6, 4), false
  end
  return nil
end

local function bytes_of(v, len)
  local out = {}
  for i = len - 1, 0, -1 do out[#out + 1] = string.char(math.floor(v / 256 ^ i) % 256) end
  return table.concat(out)
end

local function int_bytes(v)  -- an integral double of magnitude below 2^53, as msgpack packs a Python int
  if v >= 0 then
    if v <= 127 then return string.char(v) end
    if v <= 255 then return '\204' .. string.char(v) end
    if v <= 65535 then return '\205' .. bytes_of(v, 2) end
    if v < TWO32 then return '\206' .. bytes_of(v, 4) end
    local hi = math.floor(v / TWO32)
    return '\207' .. bytes_of(hi, 4) .. bytes_of(v - hi * TWO32, 4)
  end
  if v >= -32 then return string.char(v + 256) end
  if v >= -128 then return '\208' .. string.char(v + 256) end
  if v >= -32768 then return '\209' .. bytes_of(v + 65536, 2) end
  if v >= -2147483648 then return '\210' .. bytes_of(v + TWO32, 4) end
  local hi = math.floor(v / TWO32)
  return '\211' .. bytes_of(hi + TWO32, 4) .. bytes_of(v - hi * TWO32, 4)
end

-- current (codec bytes or nil: counts as int 0) + amount (codec bytes): codec bytes of the sum, is_float; or nil
local function add(cur, amount)
  local a, af = num_of(amount)
  if a == nil then return nil end
  local c, cf = 0, false
  if cur then
    c, cf = num_of(cur)
    if c == nil then return nil end
  end
  local r = c + a
  if cf or af then
    if r ~= r or r == math.huge or r == -math.huge then return nil end
    return '\203' .. struct.pack('>d', r), true, r
  end
  if r >= LIMIT or r <= -LIMIT then return nil end
  return int_bytes(r), false, r
end

-- ---- dicts ---------------------------------------------------------------------------------------------------

local function dict_put(keys, c, kb, val)
  if redis.call('HSET', keys[2], c, val) == 1 then  -- a new key: its type and its place in the order
    if kb ~= '' then redis.call('HSET', keys[3], c, kb) end
    redis.call('ZADD', keys[4], redis.call('INCR', keys[5]), c)
  end
end

local function dict_forget(keys, c)
  redis.call('HDEL', keys[3], c)
  redis.call('ZREM', keys[4], c)
end

redis.register_function('cy_dict_set', function(keys, args)
  check(keys[1], 'dict')
  dict_put(keys, args[1], args[2], args[3])
  return 1
end)

redis.register_function('cy_dict_update', function(keys, args)
  check(keys[1], 'dict')
  for i = 1, #args, 3 do dict_put(keys, args[i], args[i + 1], args[i + 2]) end
  return 1
end)

redis.register_function('cy_dict_del', function(keys, args)
  check(keys[1], 'dict')
  if redis.call('HDEL', keys[2], args[1]) == 0 then return 0 end
  dict_forget(keys, args[1])
  return 1
end)

redis.register_function('cy_dict_pop', function(keys, args)
  check(keys[1], 'dict')
  local val = redis.call('HGET', keys[2], args[1])
  if not val then return false end
  redis.call('HDEL', keys[2], args[1])
  dict_forget(keys, args[1])
  return val
end)

redis.register_function('cy_dict_popitem', function(keys, args)
  check(keys[1], 'dict')
  local top = redis.call('ZPOPMAX', keys[4])
  if #top == 0 then return false end
  local c = top[1]
  local kb = redis.call('HGET', keys[3], c) or c
  local val = redis.call('HGET', keys[2], c)
  redis.call('HDEL', keys[2], c)
  redis.call('HDEL', keys[3], c)
  return {kb, val}
end)

redis.register_function('cy_dict_setdefault', function(keys, args)
  check(keys[1], 'dict')
  local val = redis.call('HGET', keys[2], args[1])
  if val then return val end
  dict_put(keys, args[1], args[2], args[3])
  return args[3]
end)

-- compare-and-set of one key (incr): args c, key bytes, "1" + expected value or "0" (expected absent), new value
redis.register_function('cy_dict_cas', function(keys, args)
  check(keys[1], 'dict')
  local cur = redis.call('HGET', keys[2], args[1])
  if args[3] == '0' then
    if cur then return 0 end
  elseif cur ~= args[4] then
    return 0
  end
  dict_put(keys, args[1], args[2], args[5])
  return 1
end)

-- args: c, key bytes, amount (codec): the new value's bytes, or nil (the client then does a compare-and-set)
redis.register_function('cy_dict_incr', function(keys, args)
  check(keys[1], 'dict')
  local new = add(redis.call('HGET', keys[2], args[1]), args[3])
  if not new then return false end
  dict_put(keys, args[1], args[2], new)
  return new
end)

redis.register_function('cy_dict_clear', function(keys, args)
  check(keys[1], 'dict')
  redis.call('DEL', keys[2], keys[3], keys[4], keys[5])
  return 1
end)

-- the whole dict in order: key bytes, value bytes, key bytes, ...
redis.register_function{function_name = 'cy_dict_items', flags = {'no-writes'}, callback = function(keys, args)
  check(keys[1], 'dict')
  local out = {}
  for _, c in ipairs(redis.call('ZRANGE', keys[4], 0, -1)) do
    out[#out + 1] = redis.call('HGET', keys[3], c) or c
    out[#out + 1] = redis.call('HGET', keys[2], c)
  end
  return out
end}

-- one piece of a scan in insertion order.  args: after (a score, exclusive; "" = from the start), upto (the
-- counter when the scan began: keys added later are left out), whole (take everything if at most this many),
-- budget (bytes), most (items).  Returns: next score ("" = done), upto, then key, value, key, value, ...
redis.register_function{function_name = 'cy_dict_scan', flags = {'no-writes'}, callback = function(keys, args)
  check(keys[1], 'dict')
  local out = {'', ''}
  local rows
  if args[1] == '' then
    if redis.call('ZCARD', keys[4]) <= tonumber(args[3]) then
      rows = redis.call('ZRANGE', keys[4], 0, -1, 'WITHSCORES')
    else
      out[2] = redis.call('GET', keys[5]) or '0'
      rows = redis.call('ZRANGE', keys[4], '-inf', out[2], 'BYSCORE', 'LIMIT', 0, tonumber(args[5]) + 1, 'WITHSCORES')
    end
  else
    out[2] = args[2]
    rows = redis.call('ZRANGE', keys[4], '(' .. args[1], args[2], 'BYSCORE', 'LIMIT', 0, tonumber(args[5]) + 1,
                      'WITHSCORES')
  end
  local size, budget, taken = 0, tonumber(args[4]), 0
  for i = 1, #rows, 2 do
    if out[2] ~= '' and (taken >= tonumber(args[5]) or (taken > 0 and size > budget)) then
      out[1] = rows[i - 1]  -- the score of the last item taken
      break
    end
    local c = rows[i]
    local kb = redis.call('HGET', keys[3], c) or c
    local val = redis.call('HGET', keys[2], c)
    out[#out + 1] = kb
    out[#out + 1] = val
    size = size + #kb + #val
    taken = taken + 1
  end
  return out
end}

-- ---- lists -----------------------------------------------------------------------------------------------------

local function canon_of(e)  -- the equality canon of a stored element (see canon.element)
  if string.byte(e, 1) == 193 and #e >= 5 then
    local a, b, c, d = string.byte(e, 2, 5)
    local len = ((a * 256 + b) * 256 + c) * 256 + d
    return string.sub(e, 6, 5 + len)
  end
  return e
end

local function remove_at(key, i, n)  -- O(min(i, n - i)) moves on the server
  if i == n - 1 then return redis.call('RPOP', key) end
  if i == 0 then return redis.call('LPOP', key) end
  local val = redis.call('LINDEX', key, i)
  redis.call('LSET', key, i, TOMB)
  redis.call('LREM', key, (i < n / 2) and 1 or -1, TOMB)
  return val
end

-- first index j in [start, stop) whose element equals canon cx, or -1 (start/stop already clamped)
local function find(key, cx, start, stop)
  local i = start
  while i < stop do
    local j = math.min(i + CHUNK, stop) - 1
    for off, e in ipairs(redis.call('LRANGE', key, i, j)) do
      if canon_of(e) == cx then return i + off - 1 end
    end
    i = j + 1
  end
  return -1
end

local function bump(keys) redis.call('INCR', keys[3]) end

redis.register_function('cy_list_push', function(keys, args)  -- append / extend
  check(keys[1], 'list')
  push(keys[2], args, 1, #args)
  bump(keys)
  return 1
end)

redis.register_function('cy_list_pop', function(keys, args)
  check(keys[1], 'list')
  local n = redis.call('LLEN', keys[2])
  if n == 0 then fail('POPEMPTY') end
  local i = tonumber(args[1])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then fail('POPRANGE') end
  local val = remove_at(keys[2], i, n)
  bump(keys)
  return val
end)

redis.register_function('cy_list_del', function(keys, args)
  check(keys[1], 'list')
  local n = redis.call('LLEN', keys[2])
  local i = tonumber(args[1])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then fail('ASSIGN') end
  remove_at(keys[2], i, n)
  bump(keys)
  return 1
end)

redis.register_function('cy_list_set', function(keys, args)
  check(keys[1], 'list')
  local n = redis.call('LLEN', keys[2])
  local i = tonumber(args[1])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then fail('ASSIGN') end
  redis.call('LSET', keys[2], i, args[2])
  bump(keys)
  return 1
end)

redis.register_function('cy_list_insert', function(keys, args)
  check(keys[1], 'list')
  local n = redis.call('LLEN', keys[2])
  local i = tonumber(args[1])
  if i < 0 then i = math.max(i + n, 0) elseif i > n then i = n end
  if i == n then
    redis.call('RPUSH', keys[2], args[2])
  elseif i == 0 then
    redis.call('LPUSH', keys[2], args[2])
  else  -- mark position i, insert before the mark, put the old element back on the mark
    local pivot = redis.call('LINDEX', keys[2], i)
    redis.call('LSET', keys[2], i, TOMB)
    redis.call('LINSERT', keys[2], 'BEFORE', TOMB, args[2])
    redis.call('LSET', keys[2], i + 1, pivot)
  end
  bump(keys)
  return 1
end)

redis.register_function('cy_list_remove', function(keys, args)
  check(keys[1], 'list')
  local n = redis.call('LLEN', keys[2])
  local j = find(keys[2], args[1], 0, n)
  if j < 0 then fail('REMOVE') end
  remove_at(keys[2], j, n)
  bump(keys)
  return 1
end)

-- args: canon, mode ("count" | "index"), start, stop ("" = the end); index clamps start/stop as list.index does
redis.register_function{function_name = 'cy_list_find', flags = {'no-writes'}, callback = function(keys, args)
  check(keys[1], 'list')
  local n = redis.call('LLEN', keys[2])
  if args[2] == 'count' then
    local count, i = 0, 0
    while i < n do
      for _, e in ipairs(redis.call('LRANGE', keys[2], i, i + CHUNK - 1)) do
        if canon_of(e) == args[1] then count = count + 1 end
      end
      i = i + CHUNK
    end
    return count
  end
  local start, stop = tonumber(args[3]), n
  if args[4] ~= '' then stop = tonumber(args[4]) end
  if start < 0 then start = math.max(start + n, 0) end
  if stop < 0 then stop = math.max(stop + n, 0) end
  return find(keys[2], args[1], start, math.min(stop, n))
end}

redis.register_function('cy_list_reverse', function(keys, args)
  check(keys[1], 'list')
  local items = redis.call('LRANGE', keys[2], 0, -1)
  local n = #items
  for i = 1, math.floor(n / 2) do items[i], items[n + 1 - i] = items[n + 1 - i], items[i] end
  redis.call('DEL', keys[2])
  push(keys[2], items, 1, n)
  bump(keys)
  return 1
end)

-- args: index, amount (codec): the new element, or nil (missing index or not a fast number: compare-and-set)
redis.register_function('cy_list_incr', function(keys, args)
  check(keys[1], 'list')
  local e = redis.call('LINDEX', keys[2], args[1])
  if not e then return false end
  local body = e
  if string.byte(e, 1) == 193 then body = string.sub(e, 6 + #canon_of(e)) end
  local new, is_float, r = add(body, args[2])
  if not new then return false end
  if is_float and r == math.floor(r) then  -- an integral float is stored with its int canon (canon.element)
    if r >= LIMIT or r <= -LIMIT then return false end
    local c = int_bytes(r)
    new = '\193' .. bytes_of(#c, 4) .. c .. new
  end
  redis.call('LSET', keys[2], args[1], new)
  bump(keys)
  return new
end)

redis.register_function('cy_list_clear', function(keys, args)
  check(keys[1], 'list')
  redis.call('DEL', keys[2])
  bump(keys)
  return 1
end)

-- args: start, stop, step, n: the client's slice.indices(n); refused (false) when the length is no longer n
redis.register_function{function_name = 'cy_list_slice', flags = {'no-writes'}, callback = function(keys, args)
  check(keys[1], 'list')
  local start, stop, step = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  if redis.call('LLEN', keys[2]) ~= tonumber(args[4]) then return false end
  local out = {}
  if step > 0 then
    if stop <= start then return out end
    local got = redis.call('LRANGE', keys[2], start, stop - 1)
    if step == 1 then return got end
    for i = 1, #got, step do out[#out + 1] = got[i] end
  else
    if stop >= start then return out end
    local got = redis.call('LRANGE', keys[2], stop + 1, start)
    for i = #got, 1, step do out[#out + 1] = got[i] end
  end
  return out
end}

-- (version, items...): what sort(key=) and the client-side rewrites start from
redis.register_function{function_name = 'cy_list_snapshot', flags = {'no-writes'}, callback = function(keys, args)
  check(keys[1], 'list')
  local out = redis.call('LRANGE', keys[2], 0, -1)
  table.insert(out, 1, redis.call('GET', keys[3]) or '0')
  return out
end}

-- args: version, items...: replace the whole list if its version is still that one
redis.register_function('cy_list_replace_if', function(keys, args)
  check(keys[1], 'list')
  if (redis.call('GET', keys[3]) or '0') ~= args[1] then return 0 end
  redis.call('DEL', keys[2])
  push(keys[2], args, 2, #args)
  bump(keys)
  return 1
end)

-- args: version, index (>= 0), new element: set one item if the list's version is still that one (ref() writes)
redis.register_function('cy_list_set_if', function(keys, args)
  check(keys[1], 'list')
  if (redis.call('GET', keys[3]) or '0') ~= args[1] then return 0 end
  redis.call('LSET', keys[2], args[2], args[3])
  bump(keys)
  return 1
end)

-- args: index (>= 0), expected element, new element: compare-and-set of one item (list.incr)
redis.register_function('cy_list_cas_item', function(keys, args)
  check(keys[1], 'list')
  if redis.call('LINDEX', keys[2], args[1]) ~= args[2] then return 0 end
  redis.call('LSET', keys[2], args[1], args[3])
  bump(keys)
  return 1
end)

-- ---- tables and the registry -----------------------------------------------------------------------------------

-- KEYS: m, then the data keys of both kinds (v, k, o, n, l); args: kind, then triples (dict) or elements (list).
-- The registry entry was made first (it owns the name), so leftovers of a crashed create or delete are replaced.
redis.register_function('cy_table_create', function(keys, args)
  redis.call('DEL', keys[1], keys[2], keys[3], keys[4], keys[5], keys[6])
  redis.call('SET', keys[1], args[1])
  if args[1] == 'dict' then
    local dk = {keys[1], keys[2], keys[3], keys[4], keys[5]}
    for i = 2, #args, 3 do dict_put(dk, args[i], args[i + 1], args[i + 2]) end
  else
    push(keys[6], args, 2, #args)
  end
  return 1
end)

redis.register_function('cy_table_drop', function(keys, args)
  return redis.call('DEL', keys[1], keys[2], keys[3], keys[4], keys[5], keys[6])
end)

redis.register_function('cy_registry_add', function(keys, args)
  if redis.call('HSETNX', keys[1], args[1], args[2]) == 0 then return 0 end
  redis.call('ZADD', keys[2], redis.call('INCR', keys[3]), args[1])
  return 1
end)

redis.register_function('cy_registry_del', function(keys, args)
  redis.call('ZREM', keys[2], args[1])
  return redis.call('HDEL', keys[1], args[1])
end)

-- name, entry, name, entry, ... in creation order
redis.register_function{function_name = 'cy_registry_list', flags = {'no-writes'}, callback = function(keys, args)
  local out = {}
  for _, name in ipairs(redis.call('ZRANGE', keys[2], 0, -1)) do
    local entry = redis.call('HGET', keys[1], name)
    if entry then
      out[#out + 1] = name
      out[#out + 1] = entry
    end
  end
  return out
end}

-- ---- locks: KEYS = the lock (its holder's token, with the lease as its expiry), its fence (the token counter) --
-- Both keys carry the lock's name as hash tag, so they share a slot.  Tokens grow with every acquisition of the
-- lock (INCR of the fence), as long as the master keeps its data (docs/redis-backend.md).

redis.register_function('cy_lock_acquire', function(keys, args)  -- lease ms -> token, or nil when held
  if redis.call('EXISTS', keys[1]) == 1 then return false end
  local token = redis.call('INCR', keys[2])
  redis.call('SET', keys[1], string.format('%d', token), 'NX', 'PX', args[1])
  return token
end)

redis.register_function('cy_lock_release', function(keys, args)  -- token -> 1, or 0 when not its holder
  if redis.call('GET', keys[1]) ~= args[1] then return 0 end
  redis.call('DEL', keys[1])
  return 1
end)

redis.register_function('cy_lock_extend', function(keys, args)  -- token, lease ms -> 1, or 0 when not its holder
  if redis.call('GET', keys[1]) ~= args[1] then return 0 end
  redis.call('PEXPIRE', keys[1], args[2])
  return 1
end)
