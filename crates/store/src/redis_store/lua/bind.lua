-- Redis' globals, bound to locals on a function's first call: library code cannot reach them
-- while it loads, and a global's lookup costs more than most of the arithmetic it serves (a
-- call into C costs about as much as ten comparisons, so the hot paths compare inline).
local bound = false
local call, spack, sunpack, tonum, floor, ceil, encode_json, unpack_list
local function bind()
  call, spack, sunpack = redis.call, struct.pack, struct.unpack
  tonum, floor, ceil, encode_json = tonumber, math.floor, math.ceil, cjson.encode
  unpack_list = unpack
  bound = true
end
