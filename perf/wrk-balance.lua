-- wrk script for perf/balancer-side-by-side.sh: keep-alive POST /sync?s=<token>
-- with a real SyncML message (perf/sync-request.xml), spread over 64 sessions
-- (as clients that follow RespURI send them). Requests are pre-built in init().

local f = assert(io.open(os.getenv("SYNC_BODY") or "perf/sync-request.xml", "rb"))
local body = f:read("*a")
f:close()

local requests = {}
local n = 0

function init(args)
  local headers = { ["Content-Type"] = "application/vnd.syncml+xml" }
  for i = 0, 63 do
    local token = string.format("%08x%08x", (i * 2654435761) % 4294967296, (i * 40503 + 12345) % 4294967296)
    requests[#requests + 1] = wrk.format("POST", "/sync?s=" .. token, headers, body)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
