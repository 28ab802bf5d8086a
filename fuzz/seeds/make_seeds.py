#!/usr/bin/env python3
"""Writes starting inputs for the fuzz targets into fuzz/corpus/<target>/.

Only a starting point: libFuzzer grows the corpus from these. The control
bytes in front of each input follow the layouts documented in
fuzz/src/lib.rs (packet: mode, caps u32, limit u24, client_len u16,
client bytes, server bytes; handshake: mode, flags, caps u32, bytes;
command: params u16, payload; classify/set: SQL text).
"""
import hashlib, os, re, struct, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "fuzz")

def out(target, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def frame(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xff]) + payload

def lenenc(n):
    if n < 251: return bytes([n])
    if n < 1 << 16: return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24: return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)

def lstr(s):
    return lenenc(len(s)) + s

PROTO41, SSL, SECURE, PLUGIN, CONNECT_ATTRS, LENENC_DATA = 1 << 9, 1 << 11, 1 << 15, 1 << 19, 1 << 20, 1 << 21
WITH_DB, MULTI_RES, SESSION_TRACK, DEPRECATE_EOF = 1 << 3, 1 << 17, 1 << 23, 1 << 24
BASE = PROTO41 | SECURE | PLUGIN | MULTI_RES | (1 << 16)

# ---- server responses (packet target) ----
ok = b"\x00\x00\x00\x02\x00\x00\x00"
ok_more = b"\x00\x00\x00\x0a\x00\x00\x00"
err = b"\xff\x15\x04#28000Access denied for user"
state = b"\x01" + lstr(lstr(b"appdb"))
gtid_var = b"\x00" + lstr(lstr(b"last_gtid") + lstr(b"0-1-42"))
ok_track = b"\x00\x01\x00\x02\x40\x00\x00" + lstr(b"") + lstr(state + gtid_var)
eof = b"\xfe\x00\x00\x02\x00"
eof_cursor = b"\xfe\x00\x00\x42\x00"
coldef = lstr(b"def") + lstr(b"app") + lstr(b"t") + lstr(b"t") + lstr(b"c") + lstr(b"c") + \
    b"\x0c\x21\x00\xff\x00\x00\x00\xfd\x00\x00\x00\x00\x00"
row = lstr(b"hello")
null_row = b"\xfb"

def seq_frames(payloads):
    return b"".join(frame(i, p) for i, p in enumerate(payloads))

responses = {
    "ok": [ok], "err": [err], "ok_track": [ok_track], "more": [ok_more, ok],
    "rs_eof": [b"\x01", coldef, eof, row, null_row, eof],
    "rs_deprecate": [b"\x01", coldef, row, b"\xfe\x00\x00\x02\x00\x00\x00"],
    "rs_err_mid": [b"\x02", coldef, coldef, eof, row, err],
    "cursor": [b"\x01", coldef, eof_cursor],
    "stats": [b"Uptime: 100  Threads: 1"],
    "prepare": [b"\x00\x07\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00", coldef, coldef, eof, coldef, eof],
    "prepare_err": [err],
}
for name, ps in responses.items():
    server = seq_frames(ps)
    for mode in range(10):
        for caps in (BASE, BASE | DEPRECATE_EOF | SESSION_TRACK):
            out("packet", bytes([mode]) + struct.pack("<I", caps) + b"\xff\xff\x0f" + b"\x00\x00" + server)
infile_server = frame(1, b"\xfbdata.csv") + frame(4, ok)
infile_client = frame(2, b"1,2\n3,4\n") + frame(3, b"")
for caps in (BASE, BASE | DEPRECATE_EOF):
    out("packet", b"\x03" + struct.pack("<I", caps) + b"\xff\xff\x0f" + struct.pack("<H", len(infile_client)) + infile_client + infile_server)
out("packet", b"\x00" + struct.pack("<I", BASE) + b"\x10\x00\x00\x00\x00" + frame(0, b"\x03SELECT 1") + frame(1, b"\x01"))

# ---- handshake target ----
scramble = bytes(range(1, 21))
def greeting(version=b"5.5.5-10.11.6-MariaDB-0+deb12u1-log", plugin=b"mysql_native_password"):
    caps = 0xf7fe | (0x81bf << 16)
    return (b"\x0a" + version + b"\x00" + struct.pack("<I", 42) + scramble[:8] + b"\x00" +
            struct.pack("<H", caps & 0xffff) + b"\x2d" + b"\x02\x00" + struct.pack("<H", caps >> 16) +
            b"\x15" + b"\x00" * 6 + b"\x1d\x00\x00\x00" + scramble[8:] + b"\x00" + plugin + b"\x00")
login_ok = frame(0, greeting()) + frame(2, ok)
login_switch = frame(0, greeting(plugin=b"caching_sha2_password")) + frame(2, b"\xfemysql_native_password\x00" + scramble + b"\x00") + frame(4, ok)
login_refused = frame(0, greeting()) + frame(2, err)
login_err_first = frame(0, b"\xff\x69\x04Host is blocked")
for i, server in enumerate([login_ok, login_switch, login_refused, login_err_first]):
    for flags in (0, 3):
        out("handshake", bytes([1, flags]) + struct.pack("<I", 0xffffffff) + server)

def hello(caps, user=b"app", db=b"appdb", auth=scramble, plugin=b"mysql_native_password", attrs=True):
    p = struct.pack("<IIB", caps, 1 << 24, 45) + b"\x00" * 23 + user + b"\x00"
    if caps & LENENC_DATA: p += lstr(auth)
    elif caps & SECURE: p += bytes([len(auth)]) + auth
    else: p += auth + b"\x00"
    if caps & WITH_DB: p += db + b"\x00"
    if caps & PLUGIN: p += plugin + b"\x00"
    if caps & CONNECT_ATTRS and attrs:
        kv = lstr(b"_client_name") + lstr(b"libmariadb") + lstr(b"program_name") + lstr(b"mysql")
        p += lstr(kv)
    return p
full = BASE | WITH_DB | CONNECT_ATTRS | LENENC_DATA | SESSION_TRACK | DEPRECATE_EOF
for caps in (BASE, full, full & ~PLUGIN, BASE & ~PROTO41):
    out("handshake", bytes([0, 1]) + b"\x00" * 4 + frame(1, hello(caps)))
ssl = struct.pack("<IIB", full | SSL, 1 << 24, 45) + b"\x00" * 23
out("handshake", bytes([0, 1]) + b"\x00" * 4 + frame(1, ssl) + frame(2, hello(full | SSL)))
# COM_CHANGE_USER payloads (after the command byte), parsed by the pure parsers.
cu = b"app\x00" + bytes([20]) + scramble + b"appdb\x00" + b"\x2d\x00" + b"mysql_native_password\x00"
out("handshake", bytes([0, 0]) + b"\x00" * 4 + cu)
out("handshake", bytes([0, 0]) + b"\x00" * 4 + b"\x00\x07\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00")

# ---- command target ----
cmds = [b"\x01", b"\x02appdb", b"\x03SELECT 1", b"\x04t\x00%", b"\x09", b"\x0e", b"\x11" + cu,
        b"\x16SELECT ? + ?", b"\x19\x01\x00\x00\x00", b"\x1a\x01\x00\x00\x00",
        b"\x1c\x01\x00\x00\x00\x0a\x00\x00\x00", b"\x1b\x01\x00", b"\x1f", b"\x20",
        b"\x18\x01\x00\x00\x00\x00\x00blob"]
for c in cmds:
    out("command", b"\x00\x00" + c)
with_types = bytes([0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 8, 0]) + bytes([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
without = bytes([0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]) + bytes([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
out("command", b"\x02\x00" + with_types)
out("command", b"\x02\x00" + without)
out("command", b"\x00\x00" + bytes([0x17, 7, 0, 0, 0, 1, 1, 0, 0, 0]))

# ---- SQL: string literals from the classifier / SET / digest unit tests ----
lit = re.compile(rb'b?"((?:[^"\\\n]|\\.)*)"')
sql = set()
for f in ("classify.rs", "set.rs", "digest.rs", "mod.rs"):
    src = open(os.path.join(ROOT, "src", "router", f), "rb").read()
    tests = src[src.find(b"#[cfg(test)]"):]
    for m in lit.finditer(tests):
        s = m.group(1)
        try:
            s = s.decode("unicode_escape").encode("latin-1") if b"\\" in s else s
        except Exception:
            pass
        if 3 <= len(s) <= 4096 and re.search(rb"[A-Za-z]", s):
            sql.add(s)
for s in sorted(sql):
    out("classify", s)
    if s.lstrip().upper().startswith((b"SET", b"/*")):
        out("set", s)
print("ok", file=sys.stderr)
