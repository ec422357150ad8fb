"""quixstreams beside trio_tables' windowed and 1M-key rows (same broker, same topics).

usage: python quix_more.py window|unique --run R --topic T

window: consumer group qw-R, earliest; ``sdf.tumbling_window(10 s).count().current()``
        on the records' timestamps (event time, base + i ms), then the latest count per
        (key, window start) is kept in a dict and compared with
        ``expected_window_counts(base_ts_ms)`` (BENCH_N events).
unique: consumer group qu-R over a topic of BENCH_N distinct keys (``key-%07d``):
        ``state.set("c", state.get("c", 0) + 1)`` per message, as quix_bench.py; the
        RocksDB state is read back and every key must hold 1.

Both stop after BENCH_N outputs (``app.run(count=N)``: one output per message) and print
``RESULT {json}`` with events/s from the first to the N-th event, startup to the first
event, peak RSS (VmHWM) and the process's CPU (all threads). Group timeouts from
BENCH_SESSION_TIMEOUT_MS / BENCH_HEARTBEAT_INTERVAL_MS when set (as quix_bench.py).
"""
import argparse, json, os, resource, shutil, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload as W

T0 = time.time()
ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["window", "unique"])
ap.add_argument("--run", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--bootstrap", default=os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:39092"))
ap.add_argument("--loglevel", default=os.environ.get("QUIX_LOGLEVEL", "WARNING"))
a = ap.parse_args()

import quixstreams
from quixstreams import Application

STATE = os.environ.get("BENCH_STATE", os.path.join(tempfile.gettempdir(), "peers", "state"))
state_dir = os.path.join(STATE, f"quix-{a.mode}-{a.run}-{os.getpid()}")
shutil.rmtree(state_dir, ignore_errors=True)
GROUP = {name: os.environ[env] for name, env in (
    ("session.timeout.ms", "BENCH_SESSION_TIMEOUT_MS"),
    ("heartbeat.interval.ms", "BENCH_HEARTBEAT_INTERVAL_MS")) if os.environ.get(env)}
group = f"q{a.mode[0]}-{a.run}"
res = {"peer": "quixstreams", "mode": a.mode, "run": a.run,
       "quixstreams": quixstreams.__version__, "group_settings": GROUP or "defaults"}
st = {"t_first": None, "n": 0}
app = Application(broker_address=a.bootstrap, consumer_group=group,
                  auto_offset_reset="earliest", state_dir=state_dir, loglevel=a.loglevel,
                  consumer_extra_config=GROUP or None)
topic = app.topic(a.topic, key_deserializer="str", value_deserializer="bytes")
# Tansu's DescribeConfigs has no retention.ms (see quix_bench.py).
topic.broker_config.extra_config.setdefault("retention.ms", "-1")
sdf = app.dataframe(topic)
windows = {}


def first(value):
    if st["t_first"] is None:
        st["t_first"] = time.time()
    st["n"] += 1
    return value


if a.mode == "window":
    sdf = sdf.apply(first)
    sdf = sdf.tumbling_window(duration_ms=W.WINDOW_S * 1000).count().current()

    def keep(value, key, timestamp, headers):
        windows[(key, value["start"] // 1000)] = value["value"]

    sdf = sdf.update(keep, metadata=True)
else:
    def count(value, key, timestamp, headers, state):
        first(value)
        state.set("c", state.get("c", 0) + 1)

    sdf = sdf.update(count, stateful=True, metadata=True)


def read_state():
    from quixstreams.state.rocksdb import RocksDBStorePartition
    out = {}
    for dirpath, dirs, files in os.walk(os.path.join(state_dir, group)):
        if "CURRENT" in files:
            part = RocksDBStorePartition(dirpath)
            try:
                for k, v in part._db.items():  # noqa: SLF001
                    if isinstance(k, bytes) and k.endswith(b'|"c"'):
                        out[json.loads(k[:-4])] = json.loads(v)
            finally:
                part.close()
    return out


app.run(count=W.N, collect=False)
t_end = time.time()
usage = resource.getrusage(resource.RUSAGE_SELF)
span = t_end - st["t_first"]
res.update(events=st["n"], startup_to_first_event_s=round(st["t_first"] - T0, 3),
           process_s=round(span, 3), eps=round(W.N / span))
if a.mode == "window":
    meta = json.load(open(os.path.join(STATE, a.topic + ".json")))
    expected = dict(W.expected_window_counts(meta["base_ts_ms"]))
    got = windows
else:
    got = read_state()
    expected = None
if expected is not None:
    res["correct"] = got == expected
    res["window_keys"] = len(got)
else:
    res["correct"] = len(got) == W.N and all(
        v == 1 and k == f"key-{int(k[4:]):07d}" and int(k[4:]) < W.N for k, v in got.items())
    res["keys"] = len(got)
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            res["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
res["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
res["wall_s"] = round(time.time() - T0, 3)
print("RESULT " + json.dumps(res), flush=True)
shutil.rmtree(state_dir, ignore_errors=True)
