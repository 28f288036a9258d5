"""bench/run --profile: where pycached's time goes, in figures that repeat
where wall time does not. For the crawl (per directory) and for removals
(per cache), pycached against the limit baseline:

  - system calls, counted by `strace -c -f`;
  - user-space instructions, counted by valgrind's callgrind, with the
    functions that execute them (the kernel's share is in the syscalls).

Callgrind's counters are dumped once the crawl is done (READY=1, or the
limit's "ready") and again once a live burst of caches is cleared, so each
phase is measured alone."""

import os
import re
import shutil
import subprocess
import time

from harness import Limit, Pycached, SubjectError, log, read_until

CRAWL_DIRS = 10000
OWN = r'(watch|crawl|tree|reaper|match|limit|relocate|daemon)\.c:'  # our files
BURST = 2000


def parse_strace(path):
    calls = {}
    with open(path) as f:
        for line in f:
            m = re.match(r'\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$', line)
            if m and m.group(2) != 'total':
                calls[m.group(2)] = int(m.group(1))
    return calls


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(('summary:', 'totals:')):
                return int(line.split()[1])
    return None


def top_functions(path, n=12, inclusive=False, only=None):
    """Self cost per function. After a zeroing, callgrind charges the whole
    part to the frames that were on the stack (main, libc_start...): those
    rows equal the total and are left out."""
    total = callgrind_total(path)
    r = subprocess.run(['callgrind_annotate', f'--inclusive={"yes" if inclusive else "no"}',
                        '--threshold=100', path], capture_output=True, text=True)
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r'\s*([\d,]+)\s+\([^)]*\)\s+(\S+?:\S+)', line)
        if not m:
            continue
        ir = int(m.group(1).replace(',', ''))
        fn = re.sub(r'^.*/', '', m.group(2))
        if ir < total * 0.999 and (not only or re.match(only, fn)) and \
                fn not in (f for _, f in rows):
            rows.append((ir, fn))
    rows.sort(reverse=True)
    return rows[:n]


class Traced:
    """A subject started under a wrapper (strace or valgrind)."""

    def __init__(self, ctx, kind, wrapper):
        self.ctx, self.kind, self.wrapper = ctx, kind, wrapper

    def start(self, root):
        if self.kind == 'pycached':
            s = Pycached(self.ctx)
            orig = self.ctx.pycached
            script = os.path.join(self.ctx.dir, 'wrapped-pycached')
            with open(script, 'w') as f:
                f.write('#!/bin/sh\nexec ' + ' '.join(self.wrapper) + f' {orig} "$@"\n')
            os.chmod(script, 0o755)
            self.ctx.pycached = script
            try:
                s.start(root, use_ctl=False)
            finally:
                self.ctx.pycached = orig
        else:
            s = Limit(self.ctx, threads=1)
            p = subprocess.Popen(self.wrapper + [self.ctx.bin['limit'], '-t', '1', root],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            s.procs = [p]
            read_until(p.stdout, 'ready', 900, p)
        self.subject = s
        return s

    def pid(self):
        """The traced process: strace's child, or valgrind itself."""
        top = self.subject.procs[0].pid
        if self.wrapper[0] != 'strace':
            return top
        with open(f'/proc/{top}/task/{top}/children') as f:
            kids = f.read().split()
        return int(kids[0]) if kids else top

    def stop(self, sig=15):
        """Signal the traced process; its wrapper then writes its report."""
        try:
            os.kill(self.pid(), sig)
            self.subject.procs[0].wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.subject.stop()


def burst(ctx, tree, pids):
    return ctx.probe_kv('burst', '--quiet-ms', 3000, '--pids',
                        ','.join(map(str, pids)), tree, BURST, timeout=900)


def strace_phase(ctx, kind, crawl_tree, burst_tree):
    """Syscalls per dir (crawl, traced from exec) and per cache (attached)."""
    out = os.path.join(ctx.dir, f'strace-{kind}-crawl.txt')
    t = Traced(ctx, kind, ['strace', '-f', '-c', '-o', out])
    t.start(crawl_tree)
    t.stop(9)           # SIGKILL: no exit path (pycached drops each watch)
    crawl = parse_strace(out)
    s = (Pycached(ctx) if kind == 'pycached' else Limit(ctx, threads=1))
    if kind == 'pycached':
        s.start(burst_tree, use_ctl=False)
    else:
        s.start(burst_tree)
    out2 = os.path.join(ctx.dir, f'strace-{kind}-burst.txt')
    st = subprocess.Popen(['strace', '-f', '-c', '-o', out2, '-p', str(s.pids()[0])],
                          stderr=subprocess.DEVNULL)
    time.sleep(1)
    kv = burst(ctx, burst_tree, s.pids())
    st.send_signal(2)
    st.wait()
    s.stop()
    ctx.probe('clean', burst_tree)
    return crawl, parse_strace(out2), kv


def callgrind_phase(ctx, kind, crawl_tree, burst_tree):
    base = os.path.join(ctx.dir, f'callgrind-{kind}.out')
    t = Traced(ctx, kind, ['valgrind', '--tool=callgrind', '--quiet',
                           f'--callgrind-out-file={base}'])
    s = t.start(crawl_tree)
    pid = t.pid()
    subprocess.run(['callgrind_control', '-d', 'crawl', str(pid)], capture_output=True)
    subprocess.run(['callgrind_control', '-z', str(pid)], capture_output=True)
    kv = burst(ctx, crawl_tree, s.pids())
    subprocess.run(['callgrind_control', '-d', 'burst', str(pid)], capture_output=True)
    t.stop()
    ctx.probe('clean', crawl_tree)
    dumps = sorted(f for f in os.listdir(ctx.dir) if f.startswith(os.path.basename(base)))
    files = [os.path.join(ctx.dir, f) for f in dumps]
    return files, kv


def per(calls, n):
    return sum(calls.values()) / n if n else 0


def main(ctx):
    for tool in ('strace', 'valgrind', 'callgrind_annotate'):
        if not shutil.which(tool):
            raise SubjectError(f'--profile needs {tool} (apt-get install {tool})')
    crawl_tree = ctx.tree('profile-crawl', CRAWL_DIRS)
    burst_tree = ctx.tree('profile-burst', BURST)
    dirs = ctx.probe_kv('count', crawl_tree)['dirs'] + 1
    print(f'\n## Profile: crawl of {dirs} dirs, live burst of {BURST} caches\n')
    for kind in ('limit', 'pycached'):
        log(f'strace: {kind}')
        crawl, rm, kv = strace_phase(ctx, kind, crawl_tree, burst_tree)
        print(f'### {kind}: system calls (strace -c -f)\n')
        print(f'crawl: {per(crawl, dirs):.1f} syscalls per directory')
        for name, n in sorted(crawl.items(), key=lambda x: -x[1])[:8]:
            print(f'    {name:20} {n / dirs:6.2f} per dir')
        print(f'removal: {per(rm, kv["deleted"]):.1f} syscalls per cache '
              f'({kv["deleted"]} removed, {kv["left"]} left)')
        for name, n in sorted(rm.items(), key=lambda x: -x[1])[:14]:
            print(f'    {name:20} {n / max(1, kv["deleted"]):6.2f} per cache')
        print()
    for kind in ('limit', 'pycached'):
        log(f'callgrind: {kind} (slow)')
        files, kv = callgrind_phase(ctx, kind, crawl_tree, burst_tree)
        crawl_f = next((f for f in files if f.endswith('.1')), None)
        burst_f = next((f for f in files if f.endswith('.2')), None)
        print(f'### {kind}: user-space instructions (callgrind)\n')
        if crawl_f:
            print(f'crawl: {callgrind_total(crawl_f) / dirs:,.0f} instructions per '
                  f'directory (start-up included)')
            print('  self:')
            for ir, fn in top_functions(crawl_f, 8):
                print(f'    {ir / dirs:10,.0f}  {fn}')
            print('  inclusive, own code:')
            for ir, fn in top_functions(crawl_f, 8, True, OWN):
                print(f'    {ir / dirs:10,.0f}  {fn}')
        if burst_f and kv['deleted']:
            print(f'removal: {callgrind_total(burst_f) / kv["deleted"]:,.0f} '
                  f'instructions per cache ({kv["deleted"]} removed)')
            print('  self:')
            for ir, fn in top_functions(burst_f, 12):
                print(f'    {ir / kv["deleted"]:10,.0f}  {fn}')
            print('  inclusive, own code:')
            for ir, fn in top_functions(burst_f, 10, True, OWN):
                print(f'    {ir / kv["deleted"]:10,.0f}  {fn}')
        print()
