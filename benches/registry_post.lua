-- wrk script: heartbeat POSTs, as a server's heartbeat sends them
-- (src/registry/beat.rs): the address under the three header spellings
-- and a JSON body naming its services. Renewing an address the registry
-- already lists with the same services changes no list, so no watcher is
-- woken: this measures the renewal path alone.
--
--   wrk -t2 -c32 -d5s -s benches/registry_post.lua http://127.0.0.1:PORT/_rpc_/registry
--
-- GEERPC_SCALE_ADDR (default tcp@127.0.0.1:7001) and GEERPC_SCALE_BODY
-- (default none) say which instance; examples/registry_scale.rs sets them
-- to one of the instances it registered.
local addr = os.getenv("GEERPC_SCALE_ADDR") or "tcp@127.0.0.1:7001"
local body = os.getenv("GEERPC_SCALE_BODY") or ""

wrk.method = "POST"
wrk.headers["X-rpc-Server"] = addr
wrk.headers["X-rpc-Servers"] = addr
wrk.headers["X-Geerpc-Server"] = addr
if body ~= "" then
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = body
end
