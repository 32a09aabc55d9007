"""Redis instructions per call of abort, the hold sweep and sweep_done, with
the engine's call shapes of 2026-12-03: ../shared/perf/measure.py's method
(callgrind on redis-server, N calls pipelined 16 deep, serverCron and idle
subtracted) and a trimmed copy of its setup, whose phases predate these calls.

usage (from the project root): python3 scripts/perf_abort_sweep.py [OUT.json]
RV_LUA=DIR measures another lua/ folder, e.g. an older commit's:
  git archive 204c12d lua | tar -x -C /tmp/old && RV_LUA=/tmp/old/lua python3 scripts/perf_abort_sweep.py
"""
import json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "perf"))
from cg import Server, load_scripts, sha1, HERE, LUA  # noqa: E402  (../shared/perf)
from resp import Err  # noqa: E402
N, D = int(os.environ.get("N", "2000")), 16
NOW = 1764000000000; EXP = NOW + 900000; IDEM = "604800000"; OTTL = "2592000000"; LOCS = ["L1", "L2", "L3"]
sku = lambda i: f"SKU-{i:07d}"
def sk(s):
    p = "rv:{%s}" % s
    return p + ":inv", p + ":holds", p + ":hexp", p
seq = [0]
def ev():
    seq[0] += 1
    return f"15:reservoir-bench:bench-{seq[0]}"
scripts = load_scripts(LUA)
if os.path.exists(os.path.join(LUA, "sweep_done.lua")):  # newer than cg.py's list; a plain script
    scripts["sweep_done"] = open(os.path.join(LUA, "sweep_done.lua")).read()
SHA = {k: sha1(v) for k, v in scripts.items()}
anchor = open(os.path.join(HERE, "anchor_reserve.lua")).read(); SHA["_anchor"] = sha1(anchor); scripts["_anchor"] = anchor
E = lambda name, keys, args: ["EVALSHA", SHA[name], str(len(keys))] + list(keys) + [str(x) for x in args]
srv = Server("as", aof=False, valgrind=True, extra=["--hz", "1"]); r = srv.r
for k, v in scripts.items():
    assert r.call("SCRIPT", "LOAD", v) == SHA[k]
setup = []
for i in range(N):
    inv, holds, hexp, p = sk(sku(i))
    for j, loc in enumerate(LOCS):
        setup.append(E("level_set", [inv, holds, hexp, f"{p}:e:{ev()}"], [NOW, IDEM, loc, 1000000 + 10000 * j, 1]))
    for k in range(3):
        cart = f"bench-c{i}-{k}"
        setup.append(E("hold", [inv, holds, hexp, f"{p}:e:{ev()}", f"{p}:hc:{cart}"], [NOW, IDEM, cart, 10000, EXP, 1, 3] + LOCS))
bad = [x for x in r.pipe(setup, 64) if isinstance(x, Err)]; assert not bad, bad[:3]
r.pipe([["HSET", "inv:{sku:%012d}" % i, "on_hand", 10 ** 15, "reserved", 0, "version", 0] for i in range(N)], 64)
srv.instr_on(); srv.zero(); time.sleep(3); idle0, _ = srv.dump("idle0"); srv.idle_rate = idle0 / 3
res_all = []
def phase(name, cmds, expect=None):
    tot, el, res, f = srv.measure(name, cmds, D)
    res_all.append((name, tot / len(cmds)))
    s = res[len(res) // 2]
    print(f"{name:24s} {tot / len(cmds):10.0f} Ir/call  {'ok' if (expect is None or expect(s)) else 'UNEXPECTED'}  sample={json.dumps(s)[:140]}", flush=True)
    return res
phase("noop_evalsha", [E("_noop", [], []) for _ in range(N)])
phase("anchor_reserve", [E("_anchor", ["inv:{sku:%012d}" % i, "res:{sku:%012d}:ord:%d" % (i, i)], [1, NOW]) for i in range(N)], expect=lambda x: x[0] == 1)
def reserve_cmd(o, s, cart):
    inv, holds, hexp, p = sk(s)
    return E("reserve", [inv, holds, hexp, f"{p}:o:{o}", f"{p}:hc:{cart}"], [NOW, OTTL, cart, 1, 3] + LOCS + [1, "1", 10000])
phase("reserve_cart", [reserve_cmd(f"bench-k{i}", sku(i), f"bench-c{i}-0") for i in range(N)], expect=lambda x: x[0] == "new" and x[1][0] == "r")
phase("abort_reserved_cart", [E("abort", list(sk(sku(i))[:3]) + [f"{sk(sku(i))[3]}:o:bench-k{i}", f"{sk(sku(i))[3]}:hc:bench-c{i}-0"], [NOW, OTTL]) for i in range(N)], expect=lambda x: x[0] == "ok" and x[1][0] == "r" and x[1][1] != "")
SW = EXP + 1000
sw = phase("sweep_due_3_holds", [E("sweep", list(sk(sku(i))[:3]), [SW]) for i in range(N)], expect=lambda x: x[0] == "ok" and x[1][0] == "3")
if "sweep_done" in SHA:
    phase("sweep_done", [E("sweep_done", [sk(sku(i))[0]], [sw[i][1][2]]) for i in range(N)], expect=lambda x: x == 1)
phase("sweep_none_due", [E("sweep", list(sk(sku(i))[:3]), [SW]) for i in range(N)], expect=lambda x: x[0] == "ok" and x[1][0] == "0")
srv.stop()
if len(sys.argv) > 1:
    json.dump(dict(res_all), open(sys.argv[1], "w"), indent=1)
