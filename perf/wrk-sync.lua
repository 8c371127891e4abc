-- wrk script: keep-alive POST /sync with a real SyncML message (perf/sync-request.xml).
-- A realistic mix: 3 of 4 requests carry a session token (?s=, as clients that
-- follow RespURI do) spread over 16 sessions; 1 of 4 has none, so the server
-- routes it by decoding the SyncHdr. Requests are pre-built in init().

local body_file = os.getenv("SYNC_BODY") or "perf/sync-request.xml"
local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()

local requests = {}
local n = 0

function init(args)
  local headers = { ["Content-Type"] = "application/vnd.syncml+xml" }
  for i = 0, 15 do
    local token = string.format("%08x%08x", (i * 2654435761) % 4294967296, (i * 40503 + 12345) % 4294967296)
    for _ = 1, 3 do
      requests[#requests + 1] = wrk.format("POST", "/sync?s=" .. token, headers, body)
    end
    requests[#requests + 1] = wrk.format("POST", "/sync", headers, body)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
