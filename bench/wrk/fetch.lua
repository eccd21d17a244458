-- GET with Basic auth (BENCH_AUTH) on the URL given to wrk.
package.path = os.getenv("BENCH_DIR") .. "/wrk/?.lua;" .. package.path
require("common")
wrk.method = "GET"
