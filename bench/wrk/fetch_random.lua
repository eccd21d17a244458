-- GET with Basic auth of a call chosen at random, per request, among the SIDs
-- listed one per line in BENCH_SIDS: the fetch path when the call is not in
-- twigate's cache of rendered calls (a random pick among 100,000 stored calls
-- almost never repeats within the cache's size).
package.path = os.getenv("BENCH_DIR") .. "/wrk/?.lua;" .. package.path
require("common")
wrk.method = "GET"

local sids = {}
local prefix

function init(args)
  for line in io.lines(os.getenv("BENCH_SIDS")) do sids[#sids + 1] = line end
  prefix = os.getenv("BENCH_PREFIX")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  return wrk.format(nil, prefix .. sids[math.random(#sids)] .. ".json")
end
