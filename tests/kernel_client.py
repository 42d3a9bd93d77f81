"""Drives the miwb Jupyter kernel through jupyter_client, as Jupyter does; prints ok/FAIL lines.

Run by tests/lua/test_kernel.lua: python3 tests/kernel_client.py MIWB_PROGRAM.
The kernelspec is installed into a temporary prefix with `miwb kernel install --prefix`, and
jupyter_client finds it through JUPYTER_PATH. Every check compares with what the protocol or
plain arithmetic says, not with miwb's own output.
"""
import base64
import json
import os
import queue
import subprocess
import sys
import tempfile
import time

from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
import zmq

miwb = os.path.abspath(sys.argv[1])
failures = 0


def check(cond, name, detail=""):
    global failures
    if cond:
        print("ok - kernel: " + name)
    else:
        failures += 1
        print("FAIL - kernel: " + name + (": " + str(detail) if detail else ""))
    sys.stdout.flush()


def run(kc, code, timeout=60, **kw):
    """executes code; returns (reply content, [iopub messages for it])"""
    msg_id = kc.execute(code, **kw)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    outs = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            m = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        outs.append(m)
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    return reply["content"], outs


def of_type(outs, t):
    return [m["content"] for m in outs if m["msg_type"] == t]


def stdout_text(outs):
    return "".join(c["text"] for c in of_type(outs, "stream") if c["name"] == "stdout")


tmp = tempfile.mkdtemp(prefix="miwb-kernel-test-")
subprocess.run([miwb, "kernel", "install", "--prefix", tmp], check=True, stdout=subprocess.DEVNULL)
spec = json.load(open(os.path.join(tmp, "share/jupyter/kernels/miwb/kernel.json")))
check(spec["display_name"] == "miwb (Lua 5.4)" and spec["argv"][1:] == ["kernel", "-f", "{connection_file}"],
      "install writes the kernelspec", spec)
os.environ["JUPYTER_PATH"] = os.path.join(tmp, "share/jupyter")
os.chdir(tmp)  # figures land in tmp/plots

km = KernelManager(kernel_name="miwb")
km.start_kernel(stderr=open(os.path.join(tmp, "kernel.log"), "w"))
kc = km.client()
kc.start_channels()
try:
    kc.wait_for_ready(timeout=30)
    check(True, "kernel starts and answers kernel_info (wait_for_ready)")
    info = kc.kernel_info(reply=True, timeout=10)["content"]
    check(info["implementation"] == "miwb" and info["language_info"]["name"] == "lua"
          and info["protocol_version"] == "5.3", "kernel_info_reply", info)

    rep, outs = run(kc, "x = 6 * 7")
    check(rep["status"] == "ok" and not of_type(outs, "execute_result"), "a statement has no result", rep)
    rep, outs = run(kc, "x + 0.5")
    res = of_type(outs, "execute_result")
    check(res and res[0]["data"]["text/plain"] == "42.5", "state persists and a bare expression is the result", res)
    check(of_type(outs, "execute_input") and of_type(outs, "execute_input")[0]["code"] == "x + 0.5",
          "execute_input is published")
    states = [c["execution_state"] for c in of_type(outs, "status")]
    check(states[:1] == ["busy"] and states[-1:] == ["idle"], "status busy then idle", states)
    rep, outs = run(kc, "local y = 3\nprint('y is', y)")
    rep2, outs2 = run(kc, "y")
    check(stdout_text(outs) == "y is\t3\n", "print becomes a stdout stream", stdout_text(outs))
    check(of_type(outs2, "execute_result") and of_type(outs2, "execute_result")[0]["data"]["text/plain"] == "3",
          "a top-level local survives into the next cell")
    rep, outs = run(kc, "io.write('a', 1, '\\n'); io.stdout:write('b\\n'); io.stderr:write('c\\n')")
    err_text = "".join(c["text"] for c in of_type(outs, "stream") if c["name"] == "stderr")
    check(stdout_text(outs) == "a1\nb\n" and err_text == "c\n", "io.write and file writes are streams",
          (stdout_text(outs), err_text))

    rep, outs = run(kc, "local function f() error('boom') end\nf()")
    errs = of_type(outs, "error")
    check(rep["status"] == "error" and rep["ename"] == "LuaError" and "boom" in rep["evalue"],
          "an error replies status error with the Lua message", rep)
    check(errs and any("In[" in line for line in errs[0]["traceback"]), "the error carries the traceback",
          errs and errs[0]["traceback"])
    # a failed cell aborts the cells queued behind it (run all), not the ones sent later
    first = kc.execute("local t0 = os.clock() while os.clock() - t0 < 0.5 do end error('stop here')")
    second = kc.execute("queued_cell_ran = true")
    replies = {}
    while len(replies) < 2:
        m = kc.get_shell_msg(timeout=30)
        replies[m["parent_header"]["msg_id"]] = m["content"]["status"]
    check(replies == {first: "error", second: "aborted"}, "cells queued behind an error are aborted", replies)
    rep, outs = run(kc, "queued_cell_ran == nil")
    check(of_type(outs, "execute_result") and of_type(outs, "execute_result")[0]["data"]["text/plain"] == "true",
          "the aborted cell did not run, the next one does")
    rep, outs = run(kc, "io.read('l')")
    check(rep["status"] == "error" and "no standard input" in rep["evalue"], "io.read raises instead of blocking", rep)
    rep, outs = run(kc, "for i = 1, do end")
    check(rep["status"] == "error" and rep["ename"] == "SyntaxError", "a syntax error is an error reply", rep)
    rep, outs = run(kc, "x")
    check(rep["status"] == "ok" and of_type(outs, "execute_result"), "the kernel goes on after errors")

    rep = kc.complete("local t = mi.ze", 15, reply=True, timeout=10)["content"]
    check("mi.zeros" in rep["matches"] and rep["cursor_start"] == 10 and rep["cursor_end"] == 15,
          "complete_request completes mi.ze", rep)
    rep = kc.complete("é = mi.ar", 9, reply=True, timeout=10)["content"]
    check("mi.arange" in rep["matches"] and rep["cursor_start"] == 4, "cursor positions count code points", rep)
    run(kc, "t = mi.arange(6):view(2, 3):float()")
    rep = kc.complete("t:so", 4, reply=True, timeout=10)["content"]
    check("t:softmax" in rep["matches"], "completion of tensor methods", rep["matches"][:5])
    rep = kc.inspect("t", 1, reply=True, timeout=10)["content"]
    text = rep.get("data", {}).get("text/plain", "")
    check(rep["found"] and "[2, 3]" in text and "max 5" in text, "inspect_request summarizes a tensor", text)
    rep = kc.inspect("mi.zeros", 4, reply=True, timeout=10)["content"]
    check(rep["found"] and "zeros" in rep["data"]["text/plain"], "inspect_request on a function", rep)
    for code, want in [("for i = 1, 3 do", "incomplete"), ("x = 1", "complete"), ("x = = 1", "invalid"),
                       ("f(1,\n2", "incomplete")]:
        kc.is_complete(code)
        rep = kc.get_shell_msg(timeout=10)["content"]
        check(rep["status"] == want, "is_complete %r is %s" % (code, want), rep)

    # rich output: a figure, a tensor as a table, an image path, HTML
    rep, outs = run(kc, "mi.plot.imshow(mi.tensor{{0, 1}, {2, 3}}, {name = 'kt'})")
    disp = of_type(outs, "display_data")
    png = disp and base64.b64decode(disp[0]["data"].get("image/png", ""))
    check(png and png[:8] == b"\x89PNG\r\n\x1a\n" and png == open(os.path.join(tmp, "plots/kt.png"), "rb").read(),
          "a figure made in a cell is shown inline as its PNG", disp and list(disp[0]["data"]))
    check(not of_type(outs, "execute_result"), "a figure's path is not shown again as the cell's result")
    rep, outs = run(kc, "mi.display(mi.arange(40):view(2, 20))")
    disp = of_type(outs, "display_data")
    html = disp and disp[0]["data"].get("text/html", "")
    check(html and html.count("<tr>") == 3 and ">39<" in html and ">10<" not in html and "&hellip;" in html,
          "mi.display shows a tensor as an abbreviated HTML table", html[:300] if html else disp)
    check(not of_type(outs, "execute_result"), "mi.display returns nothing to show again")
    rep, outs = run(kc, "mi.display('<b>bold</b>')")
    disp = of_type(outs, "display_data")
    check(disp and disp[0]["data"].get("text/html") == "<b>bold</b>", "mi.display shows HTML", disp)
    rep, outs = run(kc, "mi.plot.attention_html({'a', 'b'}, mi.tensor{{1, 0}, {0.5, 0.5}}, {name = 'kv'})")
    disp = of_type(outs, "display_data")
    check(disp and 'class="miwb-attn"' in disp[0]["data"].get("text/html", "")
          and disp[0]["data"]["text/plain"] == "plots/kv.html" and not of_type(outs, "execute_result"),
          "an attention view is shown inline, and its path is not shown again as the result", disp)

    # huge and invalid output
    rep, outs = run(kc, "for i = 1, 200000 do print(i) end")
    text = stdout_text(outs)
    check(rep["status"] == "ok" and len(text) < 120000 and text.startswith("1\n2\n") and "more bytes" in text,
          "huge output is abbreviated", len(text))
    rep, outs = run(kc, "print('a\\255b')")
    check(stdout_text(outs) == "a\ufffdb\n", "invalid UTF-8 in output is replaced", stdout_text(outs))

    # interrupts: SIGINT (the kernelspec's interrupt_mode) and interrupt_request on control
    for how in ("SIGINT", "interrupt_request"):
        msg_id = kc.execute("n = 0 while true do n = n + 1 end")
        time.sleep(1.0)
        if how == "SIGINT":
            km.interrupt_kernel()
        else:
            kc.control_channel.send(kc.session.msg("interrupt_request", {}))
        t0 = time.time()
        reply = kc.get_shell_msg(timeout=20)
        check(reply["content"]["status"] == "error" and reply["content"]["ename"] == "Interrupted"
              and time.time() - t0 < 10, "an endless loop is stopped by " + how, reply["content"])
        if how == "interrupt_request":
            creply = kc.get_control_msg(timeout=10)
            check(creply["msg_type"] == "interrupt_reply", "interrupt_request is answered", creply["msg_type"])
        rep, outs = run(kc, "n > 0")
        check(of_type(outs, "execute_result") and of_type(outs, "execute_result")[0]["data"]["text/plain"] == "true",
              "the kernel goes on after an interrupt by " + how)

    # hostile messages: malformed frames and a wrong signature are dropped, the kernel lives on
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect("%s://%s:%d" % (km.transport, km.ip, km.shell_port))
    bad = Session(key=b"not-the-key", session="evil")
    bad.send(s, "execute_request", {"code": "pwned = true", "silent": False})
    s.send_multipart([b"junk"])
    s.send_multipart([b"<IDS|MSG>", b"", b"{", b"}", b"", b"x"])
    good_key = Session(key=km.session.key)
    raw = good_key.msg("execute_request", {"code": "pwned2 = true"})
    parts = [b"<IDS|MSG>", b"", b"not json", b"{}", b"{}", b"{}"]
    parts[1] = good_key.sign(parts[2:6]).encode() if isinstance(good_key.sign(parts[2:6]), str) else good_key.sign(parts[2:6])
    s.send_multipart(parts)
    time.sleep(0.5)
    rep, outs = run(kc, "pwned == nil and pwned2 == nil")
    check(of_type(outs, "execute_result") and of_type(outs, "execute_result")[0]["data"]["text/plain"] == "true",
          "wrongly signed and malformed messages are dropped, the kernel answers")
    log = open(os.path.join(tmp, "kernel.log")).read()
    check("bad signature" in log and "no <IDS|MSG>" in log and "header" in log,
          "dropped messages are logged", log[-500:])
    s.close(0)
    ctx.term()

    km.shutdown_kernel(now=False)
    check(not km.is_alive(), "shutdown_request stops the kernel")
finally:
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)

sys.exit(1 if failures else 0)
