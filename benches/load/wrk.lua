-- wrk script for benches/load.sh.
--
-- WRK_TOKENS=<file> (one token a line): every request carries a different token. Thread i of
-- WRK_THREADS takes lines i, i+n, i+2n, ... and walks them in order, so a token comes back only
-- after every other token of the list has been sent once.
-- Without WRK_TOKENS the request is static (a repeated token is passed with -H).
--
-- done() prints one machine-readable line for the script:
--   RESULT requests=N duration_us=N p50_us=N p99_us=N non2xx=N errors=N

local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("tid", next_id)
end

-- This thread's share of the non-empty lines of `file` (lines tid, tid+n, tid+2n, ... of
-- WRK_THREADS = n), each passed through `f`.
local function my_lines(file, f)
   local threads = tonumber(os.getenv("WRK_THREADS") or "1")
   local out, n = {}, 0
   for line in io.lines(file) do
      if line ~= "" then
         if n % threads == (tid - 1) then
            out[#out + 1] = f(line)
         end
         n = n + 1
      end
   end
   return out
end

local token_file = os.getenv("WRK_TOKENS")

if token_file and token_file ~= "" then
   local mine = {}
   local i = 0

   function init(args)
      mine = my_lines(token_file, function(line) return "Bearer " .. line end)
      if #mine == 0 then
         error("no tokens for thread " .. tid .. " in " .. token_file)
      end
   end

   function request()
      i = i % #mine + 1
      return wrk.format(nil, nil, { ["Authorization"] = mine[i] })
   end
end

-- WRK_PROOFS=<file> (one DPoP proof a line) and WRK_AUTH=<Authorization value>: every request
-- carries the same Authorization and the next unused proof (the DPoP row; a proof is used once,
-- so the file must hold at least as many proofs as the run sends).
local proof_file = os.getenv("WRK_PROOFS")

if proof_file and proof_file ~= "" then
   local mine = {}
   local i = 0
   local auth = os.getenv("WRK_AUTH") or ""

   function init(args)
      mine = my_lines(proof_file, function(line) return line end)
   end

   function request()
      i = i % #mine + 1
      return wrk.format(nil, nil, { ["Authorization"] = auth, ["DPoP"] = mine[i] })
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50.0), latency:percentile(99.0),
      e.status, e.connect + e.read + e.write + e.timeout))
end
