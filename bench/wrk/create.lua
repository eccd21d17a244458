-- POST …/Calls.json with Basic auth (BENCH_AUTH) and the form body in BENCH_BODY.
package.path = os.getenv("BENCH_DIR") .. "/wrk/?.lua;" .. package.path
require("common")
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
