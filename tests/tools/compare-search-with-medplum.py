#!/usr/bin/env python3
"""Compare the gateway's FHIR search answers with Medplum's (medplum-search-oracle.mjs) on Synthea data.

Usage (from the repo root, after `npm ci --prefix tests/tools`):

    python3 tests/tools/compare-search-with-medplum.py --gateway target/release/hie-gateway
    HIE_GATEWAY_BIN=target/release/hie-gateway python3 tests/tools/compare-search-with-medplum.py \
        [--queries tests/tools/search-comparison-queries.txt] [--fixtures tests/fixtures/synthea] \
        [--json results.json] [--only-differences]

What it does:
  1. starts the gateway in a fresh temporary directory (dev certificates, one "trust" client, SQLite),
  2. POSTs the Synthea bundles to it (hospitalInformation*, practitionerInformation*, then the patient
     transaction bundles) and maps each posted entry's key (its Synthea identifier value, else the
     fullUrl urn:uuid, exactly as the oracle does) to the gateway id from response.location,
  3. runs tests/tools/medplum-search-oracle.mjs on the same bundles and the same queries (in parallel),
  4. sends every query to the gateway with `Prefer: handling=strict`, replacing the placeholders
     {Type:key} -> Type/<gateway id> and {id:Type:key} -> <gateway id>, follows `next` links and
     collects search.mode == match entries (include entries separately), mapping ids back to keys,
  5. prints one line per query and a summary.

Outcome of a query:
  same                     both answered 200 with the same set of matches (the same order when the
                           query has _sort; the same total for _summary=count)
  DIFFERENT                both answered, results differ; the symmetric difference is printed
  DIFFERENT(order)         same set, different order under _sort
  medplum-unsupported      both answered and differ, but the oracle flags a part of the query that
                           Medplum's in-memory matcher does not evaluate (its "unsupported" notes)
  refused-by-gateway       gateway 4xx (400 = parameter/modifier/prefix not supported or invalid), Medplum 200
  refused-by-medplum       Medplum 4xx, gateway 200
  refused-by-both          both 4xx
  error                    5xx, a transport error, or an unresolved placeholder on one side
"same" lines whose query the oracle flags as unsupported are marked "(medplum-unsupported)".

Exit status: 0 when the comparison ran (whatever it found), 2 on a setup failure.
Python 3.11 standard library only.
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

SYNTHEA_SYSTEM = "https://github.com/synthetichealth/synthea"
PLACEHOLDER = re.compile(r"\{(id:)?([A-Z][A-Za-z]+):([^{}]+)\}")
REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


class SetupError(Exception):
    pass


def log(msg):
    print(f"compare-search: {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------ gateway
class Gateway:
    def __init__(self, binary, workdir):
        self.binary = os.path.abspath(binary)
        self.dir = workdir
        self.proc = None
        self.port = free_port()
        self.ops_port = free_port()
        self.conn = None

    def start(self):
        run = lambda *a: subprocess.run([self.binary, *a], cwd=self.dir, capture_output=True, text=True)
        r = run("certs", "init", "--dir", "certs")
        if r.returncode != 0:
            raise SetupError(f"certs init failed: {r.stderr.strip()}")
        r = run("certs", "client", "--dir", "certs", "--name", "cmp", "--ods", "R9Z", "--kind", "trust")
        if r.returncode != 0:
            raise SetupError(f"certs client failed: {r.stderr.strip()}")
        db = os.path.join(self.dir, "hie.db")
        with open(os.path.join(self.dir, "hie-gateway.toml"), "w") as f:
            f.write(
                f'[server]\nlisten = "127.0.0.1:{self.port}"\nops_listen = "127.0.0.1:{self.ops_port}"\n'
                f'[tls]\ngenerate_dev_certificates = false\n[database]\nurl = "sqlite://{db}"\n'
                f'[log]\nlevel = "warn"\n'
            )
            f.write(r.stdout)
        self.logfile = open(os.path.join(self.dir, "gateway.log"), "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve"], cwd=self.dir, stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"gateway exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.ops_port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SetupError(f"gateway not ready after 120 s: {self.log_tail()}")
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "certs", "ca.pem"))
        ctx.load_cert_chain(
            os.path.join(self.dir, "certs", "clients", "cmp.pem"), os.path.join(self.dir, "certs", "clients", "cmp.key")
        )
        self.ctx = ctx

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "gateway.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        # Close our keep-alive connection first: a graceful shutdown waits for open connections.
        if self.conn:
            self.conn.close()
            self.conn = None
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    def request(self, method, path, body=None, headers=None):
        """path: absolute path ("/fhir/r4/...") or a full URL from a link. Returns (status, parsed json|text)."""
        if path.startswith("https://") or path.startswith("http://"):
            u = urllib.parse.urlsplit(path)
            path = u.path + ("?" + u.query if u.query else "")
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=300)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data.decode("utf-8", "replace")


def entry_key(entry):
    res = entry.get("resource") or {}
    for ident in res.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == SYNTHEA_SYSTEM and ident.get("value"):
            return ident["value"]
    m = re.match(r"^urn:uuid:(.+)$", entry.get("fullUrl") or "")
    return m.group(1) if m else res.get("id")


def load_gateway(gw, files):
    key_to_id = {}  # "Type|key" -> gateway id
    id_to_key = {}  # "Type/gateway id" -> key
    for path in files:
        with open(path) as f:
            raw = f.read()
        bundle = json.loads(raw)
        t = time.time()
        status, resp = gw.request(
            "POST", "/fhir/r4", body=raw.encode(), headers={"Content-Type": "application/fhir+json"}
        )
        if status != 200 or not isinstance(resp, dict) or resp.get("resourceType") != "Bundle":
            raise SetupError(f"POST {os.path.basename(path)}: {status} {str(resp)[:500]}")
        entries = bundle.get("entry") or []
        rentries = resp.get("entry") or []
        if len(entries) != len(rentries):
            raise SetupError(f"{os.path.basename(path)}: {len(entries)} entries posted, {len(rentries)} in the response")
        failed = 0
        for e, r in zip(entries, rentries):
            rs = r.get("response") or {}
            if not str(rs.get("status", "")).startswith("2"):
                failed += 1
                continue
            loc = rs.get("location") or ""
            m = re.match(r"^(?:.*/)?([A-Z][A-Za-z]+)/([^/]+)(?:/_history/.*)?$", loc)
            if not m:
                continue
            rtype, rid = m.group(1), m.group(2)
            key = entry_key(e)
            if key is None:
                continue
            key_to_id.setdefault(f"{rtype}|{key}", rid)
            id_to_key.setdefault(f"{rtype}/{rid}", key)
        if failed:
            raise SetupError(f"{os.path.basename(path)}: {failed} entries failed")
        log(f"gateway: {os.path.basename(path)} ({bundle.get('type')}, {len(entries)} entries) in {time.time() - t:.1f} s")
    return key_to_id, id_to_key


def substitute(query, key_to_id):
    missing = []

    def repl(m):
        bare, rtype, key = m.group(1), m.group(2), m.group(3)
        rid = key_to_id.get(f"{rtype}|{key}")
        if rid is None:
            missing.append(f"{rtype}:{key}")
            return m.group(0)
        return rid if bare else f"{rtype}/{rid}"

    return PLACEHOLDER.sub(repl, query), missing


def outcome_text(body):
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(
            (i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code") or "")
            for i in body.get("issue") or []
        )
    return str(body)[:300]


def gateway_search(gw, query, key_to_id, id_to_key):
    result = {"query": query, "status": None, "ids": [], "total": None}
    url, missing = substitute(query.lstrip("/"), key_to_id)
    if missing:
        result["error"] = f"unresolved placeholder(s): {', '.join(missing)}"
        return result
    link = "/fhir/r4/" + url
    included, pages, unmapped = [], 0, 0
    seen_links = set()
    while link:
        status, body = gw.request("GET", link, headers={"Prefer": "handling=strict", "Accept": "application/fhir+json"})
        pages += 1
        if pages == 1:
            result["status"] = status
            if isinstance(body, dict):
                result["total"] = body.get("total")
        if status != 200 or not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            result["status"] = status
            result["error"] = outcome_text(body)
            break
        for e in body.get("entry") or []:
            res = e.get("resource") or {}
            ref = f"{res.get('resourceType')}/{res.get('id')}"
            key = id_to_key.get(ref)
            if key is None:
                unmapped += 1
                out = ref
            else:
                out = f"{res.get('resourceType')}/{key}"
            if (e.get("search") or {}).get("mode") == "include":
                included.append(out)
            elif (e.get("search") or {}).get("mode", "match") == "match":
                result["ids"].append(out)
        link = next((l.get("url") for l in body.get("link") or [] if l.get("relation") == "next"), None)
        if link in seen_links or pages > 10000:
            result["error"] = "paging loop"
            break
        seen_links.add(link)
    if included:
        result["included"] = included
    if pages > 1:
        result["pages"] = pages
    if unmapped:
        result["unmapped"] = unmapped
    return result


# ------------------------------------------------------------------------------------------ compare
def has_param(query, name):
    q = query.split("?", 1)[1] if "?" in query else ""
    return any(urllib.parse.unquote(p.split("=", 1)[0]) == name for p in q.split("&"))


def param_value(query, name):
    q = query.split("?", 1)[1] if "?" in query else ""
    for p in q.split("&"):
        k, _, v = p.partition("=")
        if urllib.parse.unquote(k) == name:
            return urllib.parse.unquote_plus(v)
    return None


def classify(g, m):
    def kind(r):
        s = r.get("status")
        if s == 200 and "error" not in r:
            return "ok"
        if isinstance(s, int) and 400 <= s < 500:
            return "refused"
        return "error"

    gk, mk = kind(g), kind(m)
    flagged = bool(m.get("unsupported"))
    info = {}
    if gk == "error" or mk == "error":
        return "error", info
    if gk == "refused" and mk == "refused":
        return "refused-by-both", info
    if gk == "refused":
        return "refused-by-gateway", info
    if mk == "refused":
        return "refused-by-medplum", info
    query = g["query"]
    if param_value(query, "_summary") == "count":
        same = g.get("total") == m.get("total")
        info["totals"] = (g.get("total"), m.get("total"))
        if same:
            return "same", info
        return ("medplum-unsupported" if flagged else "DIFFERENT"), info
    gs, ms = g["ids"], m["ids"]
    only_g = sorted(set(gs) - set(ms))
    only_m = sorted(set(ms) - set(gs))
    info.update(only_gateway=only_g, only_medplum=only_m, counts=(len(gs), len(ms)))
    if len(gs) != len(set(gs)):
        info["gateway_duplicates"] = len(gs) - len(set(gs))
    if len(ms) != len(set(ms)):
        info["medplum_duplicates"] = len(ms) - len(set(ms))
    if only_g or only_m or "gateway_duplicates" in info or "medplum_duplicates" in info:
        return ("medplum-unsupported" if flagged else "DIFFERENT"), info
    if has_param(query, "_sort") and gs != ms:
        first = next(i for i, (a, b) in enumerate(zip(gs, ms)) if a != b)
        info["first_order_difference"] = first
        return ("medplum-unsupported" if flagged else "DIFFERENT(order)"), info
    return "same", info


def fmt_ids(ids, limit):
    s = ", ".join(ids[:limit])
    return s + (f", ... (+{len(ids) - limit})" if len(ids) > limit else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", default=os.environ.get("HIE_GATEWAY_BIN"), help="hie-gateway binary (or env HIE_GATEWAY_BIN)")
    ap.add_argument("--queries", default=os.path.join(REPO_ROOT, "tests", "tools", "search-comparison-queries.txt"))
    ap.add_argument("--fixtures", default=os.path.join(REPO_ROOT, "tests", "fixtures", "synthea"))
    ap.add_argument("--oracle", default=os.path.join(REPO_ROOT, "tests", "tools", "medplum-search-oracle.mjs"))
    ap.add_argument("--node", default=os.environ.get("NODE", "node"))
    ap.add_argument("--json", help="write every query's two answers and the verdict to this file")
    ap.add_argument("--only-differences", action="store_true", help="do not print 'same' lines")
    ap.add_argument("--max-ids", type=int, default=12, help="ids printed per side of a difference")
    ap.add_argument("--keep-temp", action="store_true", help="keep the gateway's temporary directory")
    args = ap.parse_args()
    if not args.gateway:
        ap.error("give the gateway binary with --gateway or HIE_GATEWAY_BIN")
    if not os.access(args.gateway, os.X_OK):
        log(f"gateway binary {args.gateway} is not executable")
        return 2

    fx = args.fixtures
    files = (
        sorted(glob.glob(os.path.join(fx, "hospitalInformation*.json")))
        + sorted(glob.glob(os.path.join(fx, "practitionerInformation*.json")))
        + sorted(glob.glob(os.path.join(fx, "[A-Z]*_*.json")))
    )
    if len(files) < 3:
        log(f"no Synthea bundles in {fx}")
        return 2
    with open(args.queries) as f:
        queries = [l.strip() for l in f if l.strip() and not l.strip().startswith("#")]

    workdir = tempfile.mkdtemp(prefix="hie-search-compare.")
    gw = Gateway(args.gateway, workdir)
    oracle = None
    oracle_out = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        # Medplum oracle, in parallel with the gateway load.
        oracle = subprocess.Popen(
            [args.node, args.oracle, "--quiet", *files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def feed_and_read():
            try:
                oracle_out["stdout"], oracle_out["stderr"] = oracle.communicate("\n".join(queries) + "\n")
            except Exception as e:  # noqa: BLE001
                oracle_out["exception"] = e

        reader = threading.Thread(target=feed_and_read, daemon=True)
        reader.start()

        t0 = time.time()
        gw.start()
        log(f"gateway ready in {time.time() - t0:.1f} s (work dir {workdir})")
        key_to_id, id_to_key = load_gateway(gw, files)
        log(f"gateway: {len(key_to_id)} keys mapped; running {len(queries)} queries")
        t1 = time.time()
        gresults = [gateway_search(gw, q, key_to_id, id_to_key) for q in queries]
        log(f"gateway: {len(queries)} queries in {time.time() - t1:.1f} s")

        reader.join()
        if "exception" in oracle_out:
            raise SetupError(f"oracle: {oracle_out['exception']}")
        if oracle.returncode != 0:
            raise SetupError(
                f"oracle exited {oracle.returncode} (is tests/tools/node_modules installed? "
                f"npm ci --prefix tests/tools): {oracle_out.get('stderr', '')[-2000:]}"
            )
        lines = [l for l in oracle_out["stdout"].splitlines() if l.strip()]
        loaded = json.loads(lines[0]).get("loaded")
        mresults = [json.loads(l) for l in lines[1:]]
        if len(mresults) != len(queries):
            raise SetupError(f"oracle answered {len(mresults)} of {len(queries)} queries")
        log(f"medplum: loaded {loaded}")
    except (SetupError, OSError, ValueError) as e:
        log(f"setup failed: {e}")
        return 2
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if oracle and oracle.poll() is None:
            oracle.kill()
            oracle.wait()
        gw.stop()
        if args.keep_temp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    counts = {}
    report = []
    for q, g, m in zip(queries, gresults, mresults):
        verdict, info = classify(g, m)
        counts[verdict] = counts.get(verdict, 0) + 1
        report.append({"query": q, "verdict": verdict, "info": info, "gateway": g, "medplum": m})
        if verdict == "same" and args.only_differences:
            continue
        flag = " (medplum-unsupported)" if verdict == "same" and m.get("unsupported") else ""
        if verdict == "same":
            n = info.get("totals", (len(g["ids"]),))[0]
            print(f"[same] {q}  -> {n}{flag}")
            continue
        print(f"[{verdict}] {q}")
        if verdict.startswith("refused") or verdict == "error":
            print(f"    gateway: {g.get('status')} {g.get('error', '') if g.get('status') != 200 or 'error' in g else str(len(g['ids'])) + ' matches'}")
            print(f"    medplum: {m.get('status')} {m.get('error', '') if m.get('status') != 200 or 'error' in m else str(len(m['ids'])) + ' matches'}")
        elif "totals" in info:
            print(f"    total: gateway {info['totals'][0]}, medplum {info['totals'][1]}")
        else:
            print(f"    gateway {info['counts'][0]}, medplum {info['counts'][1]} matches")
            if info["only_gateway"]:
                print(f"    only gateway ({len(info['only_gateway'])}): {fmt_ids(info['only_gateway'], args.max_ids)}")
            if info["only_medplum"]:
                print(f"    only medplum ({len(info['only_medplum'])}): {fmt_ids(info['only_medplum'], args.max_ids)}")
            for k in ("gateway_duplicates", "medplum_duplicates", "first_order_difference"):
                if k in info:
                    print(f"    {k.replace('_', ' ')}: {info[k]}")
            if "first_order_difference" in info:
                i = info["first_order_difference"]
                print(f"    gateway order from there: {fmt_ids(g['ids'][i:], 4)}")
                print(f"    medplum order from there: {fmt_ids(m['ids'][i:], 4)}")
        if m.get("unsupported"):
            print(f"    medplum notes: {'; '.join(m['unsupported'])}")
        if g.get("included") is not None or m.get("included") is not None:
            print(f"    included: gateway {len(g.get('included') or [])}, medplum {len(m.get('included') or [])}")

    print()
    order = ["same", "DIFFERENT", "DIFFERENT(order)", "medplum-unsupported", "refused-by-gateway",
             "refused-by-medplum", "refused-by-both", "error"]
    print(f"queries run: {len(queries)}")
    for k in order:
        print(f"  {k:22} {counts.get(k, 0)}")
    flagged_same = sum(1 for r in report if r["verdict"] == "same" and r["medplum"].get("unsupported"))
    print(f"  (of the 'same', {flagged_same} are queries the oracle flags as medplum-unsupported)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"counts": counts, "results": report}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
