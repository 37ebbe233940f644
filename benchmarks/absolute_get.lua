-- wrk through an explicit proxy: keep-alive GETs in absolute form (`GET http://host/ ...`),
-- sent to the proxy's own address, as a proxy-aware client sends them.
wrk.path = "http://origin.bench.example/"
wrk.headers["Host"] = "origin.bench.example"
