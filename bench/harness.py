"""Plumbing for bench/run: prerequisites, builds, the private tmpfs, the
machine line, /proc readings, the watchers under test ("subjects") and the
table. The timing-critical parts are the C programs next to this file; this
module only starts them and reads what they print."""

import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(BENCH)
T0 = time.monotonic()

# Debian packages: what bench/run itself needs, and what building pycached needs.
PACKAGES = {
    'cc': 'gcc', 'pkg-config': 'pkg-config', 'meson': 'meson',
    'ninja': 'ninja-build', 'inotifywait': 'inotify-tools',
}
LIB_PACKAGES = {
    'libuv': 'libuv1-dev', 'inih': 'libinih-dev', 'json-c': 'libjson-c-dev',
    'libsystemd': 'libsystemd-dev',
}


class HarnessError(Exception):
    """The harness itself cannot go on: bench/run exits 2."""


class SubjectError(Exception):
    """A watcher under test failed: reported in the table, the run goes on."""


def log(msg):
    print(f'[{time.monotonic() - T0:6.1f}s] {msg}', file=sys.stderr, flush=True)


def now_ns():
    return time.monotonic_ns()


# --- prerequisites and builds ------------------------------------------------

def missing_packages():
    miss = [pkg for cmd, pkg in PACKAGES.items() if not shutil.which(cmd)]
    if shutil.which('pkg-config'):
        for lib, pkg in LIB_PACKAGES.items():
            if subprocess.run(['pkg-config', '--exists', lib]).returncode:
                miss.append(pkg)
    else:
        miss += LIB_PACKAGES.values()
    return sorted(set(miss))


def ensure_packages():
    """Install what is missing when root with apt-get; else say how. Returns
    the packages still missing."""
    miss = missing_packages()
    if not miss:
        return []
    if os.geteuid() == 0 and shutil.which('apt-get'):
        log(f'installing {" ".join(miss)} with apt-get')
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        cmd = ['apt-get', 'install', '-y', '--no-install-recommends'] + miss
        if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode:
            subprocess.run(['apt-get', 'update'], env=env, stdin=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL)
        miss = missing_packages()
    if miss:
        log(f'missing: {" ".join(miss)}; install with: '
            f'sudo apt-get install {" ".join(miss)}')
    return miss


def _stale(target, sources):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(s) > t for s in sources)


CFLAGS = ['-std=c11', '-O2', '-g', '-D_GNU_SOURCE', '-Wall', '-Wextra',
          '-Wno-unused-parameter', '-Wshadow', '-Wvla', '-Wformat=2',
          '-Wmissing-prototypes', '-Wstrict-prototypes']


def build_bench(bindir):
    """The bench's own programs, with cc: they need nothing from meson and
    must build even while the project's other targets are mid-edit."""
    os.makedirs(bindir, exist_ok=True)
    cc = os.environ.get('CC', 'cc')
    hdr = [os.path.join(BENCH, h) for h in ('bench.h', 'probe.h')]
    uv = subprocess.run(['pkg-config', '--cflags', '--libs', 'libuv'],
                        capture_output=True, text=True).stdout.split()
    progs = {
        'limit': (['limit.c'], ['-pthread']),
        'probe': (['probe.c', 'probe-tree.c', 'probe-ctl.c'], ['-pthread']),
        'uvwatch': (['uvwatch.c'], uv),
    }
    out = {}
    for name, (srcs, extra) in progs.items():
        paths = [os.path.join(BENCH, s) for s in srcs]
        target = os.path.join(bindir, name)
        if _stale(target, paths + hdr):
            r = subprocess.run([cc] + CFLAGS + ['-o', target] + paths + extra,
                               capture_output=True, text=True)
            if r.returncode:
                raise HarnessError(f'cannot build bench/{name}:\n{r.stderr}')
            if r.stderr.strip():
                log(f'warnings building {name}:\n{r.stderr}')
        out[name] = target
    return out


def build_pycached(builddir):
    """pycached (required) and pycachectl (optional: it may not exist yet)
    from this checkout, in a build dir of the bench's own, tests off."""
    if not os.path.exists(os.path.join(builddir, 'build.ninja')):
        r = subprocess.run(['meson', 'setup', builddir, TOP, '-Dtests=disabled'],
                           capture_output=True, text=True)
        if r.returncode:
            raise HarnessError(f'meson setup failed:\n{r.stdout}\n{r.stderr}')
    res = {}
    for name, sub in (('pycached', 'daemon'), ('pycachectl', 'cli')):
        r = subprocess.run(['meson', 'compile', '-C', builddir, name],
                           capture_output=True, text=True)
        path = os.path.join(builddir, sub, name)
        if r.returncode == 0 and os.access(path, os.X_OK):
            res[name] = path
        elif name == 'pycached':
            raise HarnessError(f'cannot build pycached:\n{r.stdout[-3000:]}')
        else:
            log('pycachectl did not build: control benchmarks will be n/a')
    return res


# --- where the bench runs ------------------------------------------------------

def can_unshare():
    if not shutil.which('unshare'):
        return False
    return subprocess.run(['unshare', '-Urm', 'true'], stderr=subprocess.DEVNULL,
                          stdin=subprocess.DEVNULL).returncode == 0


def mount_private_tmpfs(path):
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'mode=0700,size=50%',
                        'tmpfs', path], capture_output=True, text=True)
    if r.returncode:
        raise HarnessError(f'cannot mount a tmpfs on {path}: {r.stderr.strip()}')


def mount_of(path):
    """(mount point, fs type, mount options + super options) of path."""
    best = None
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        for line in f:
            a, b = line.split(' - ', 1)
            a, b = a.split(), b.split()
            mp = a[4].replace('\\040', ' ')
            if path == mp or path.startswith(mp.rstrip('/') + '/'):
                if not best or len(mp) >= len(best[0]):
                    best = (mp, b[0], a[5] + (',' + b[2] if len(b) > 2 else ''))
    return best or ('?', '?', '?')


def revision():
    """The checkout measured: commit, and whether the tree had edits."""
    r = subprocess.run(['git', '-C', TOP, 'describe', '--always', '--dirty'],
                       capture_output=True, text=True)
    return r.stdout.strip() or 'unknown'


def machine_info(bench_dir, where):
    model = '?'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    mp, fstype, opts = mount_of(bench_dir)
    with open('/proc/loadavg') as f:
        load = ' '.join(f.read().split()[:3])
    return {
        'cpu': model, 'cores': os.cpu_count(), 'kernel': os.uname().release,
        'fs': fstype, 'mount_options': opts, 'dir': bench_dir, 'where': where,
        'loadavg_at_start': load, 'revision': revision(),
        'max_user_watches': read_int('/proc/sys/fs/inotify/max_user_watches'),
        'max_queued_events': read_int('/proc/sys/fs/inotify/max_queued_events'),
    }


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --- /proc readings -------------------------------------------------------------

CLK_TCK = os.sysconf('SC_CLK_TCK')


def _tasks(pid):
    try:
        return os.listdir(f'/proc/{pid}/task')
    except OSError:
        return []


def _stat_fields(path):
    with open(path) as f:
        s = f.read()
    return s[s.rindex(')') + 2:].split()


def cpu_ns(pids):
    """CPU time of each process, every thread included, exited ones too (the
    process CPU clock, clock_getcpuclockid(pid)), plus the children already
    reaped (cutime+cstime ticks): the one-liner's rm processes count."""
    total = 0
    for pid in pids:
        try:
            total += time.clock_gettime_ns(((~pid) << 3) | 2)
            st = _stat_fields(f'/proc/{pid}/stat')
            total += (int(st[13]) + int(st[14])) * 10**9 // CLK_TCK
        except OSError:
            pass
    return total


def wait_idle(pids, quiet=0.3, timeout=30.0):
    """Until the processes used under 2% of a CPU for `quiet` seconds: a
    watcher may still be rescanning after the last cache is gone."""
    deadline = time.monotonic() + timeout
    last, since = cpu_ns(pids), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        c = cpu_ns(pids)
        if c - last > 10**6:
            since = time.monotonic()
        last = c
        if time.monotonic() - since >= quiet:
            return True
    return False


def ticks(pids):
    """utime+stime (+ reaped children), in clock ticks, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            st = _stat_fields(f'/proc/{pid}/stat')
            total += sum(int(x) for x in st[11:15])
        except OSError:
            pass
    return total


def ctxt(pids):
    """(voluntary, involuntary) context switches summed over every thread."""
    vol = inv = 0
    for pid in pids:
        for tid in _tasks(pid):
            try:
                with open(f'/proc/{pid}/task/{tid}/status') as f:
                    for line in f:
                        if line.startswith('voluntary_ctxt_switches'):
                            vol += int(line.split()[1])
                        elif line.startswith('nonvoluntary_ctxt_switches'):
                            inv += int(line.split()[1])
            except OSError:
                pass
    return vol, inv


def rss(pids):
    total = 0
    for pid in pids:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    total += int(line.split()[1]) * 1024
    return total


class LimitMonitor:
    """Samples fs.inotify.max_user_watches: tests elsewhere on a shared
    machine may lower it for a while, which would fake a watcher's failure."""

    PATH = '/proc/sys/fs/inotify/max_user_watches'

    def __init__(self):
        self.low = read_int(self.PATH)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            v = read_int(self.PATH)
            if v is not None and (self.low is None or v < self.low):
                self.low = v
            time.sleep(0.05)

    def reset(self):
        """The lowest value seen since the last reset."""
        low, self.low = self.low, read_int(self.PATH)
        return low


# --- statistics -------------------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, -(-p * len(v) // 100) - 1))
    return v[int(k)]


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ratios(a, b):
    """Per-round a/b where both exist and b > 0."""
    return [x / y for x, y in zip(a, b) if x is not None and y not in (None, 0)]


# --- processes ------------------------------------------------------------------

def read_until(stream, want, timeout, proc=None):
    """Read stream until a line containing want; the line, or raise."""
    fd = stream.fileno()
    buf = b''
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while True:
            while b'\n' in buf:
                line, buf = buf.split(b'\n', 1)
                if want.encode() in line:
                    return line.decode(errors='replace')
            left = deadline - time.monotonic()
            if left <= 0:
                raise SubjectError(f'no "{want}" within {timeout:.0f} s')
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                st = proc.poll() if proc else None
                raise SubjectError(f'exited (status {st}) before "{want}"')
            buf += chunk
    finally:
        sel.close()


def drain_in_background(stream):
    def run():
        try:
            while stream.read(65536):
                pass
        except (OSError, ValueError):
            pass
    threading.Thread(target=run, daemon=True).start()


def stop_proc(p, sig=15):
    if p is None or p.poll() is not None:
        return
    try:
        os.kill(p.pid, 18)          # SIGCONT: a burst may have left it stopped
        os.kill(p.pid, sig)
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass


class Subject:
    """A watcher under test: start(root) returns the crawl time in ns (from
    the request to "every directory watched"); pids() are the processes
    whose CPU, wake-ups and memory are its cost."""
    key = '?'
    label = '?'

    def __init__(self, ctx):
        self.ctx = ctx
        self.procs = []

    def pids(self):
        return [p.pid for p in self.procs if p.poll() is None]

    def stop_pids(self):
        return self.pids()

    def stop(self):
        for p in reversed(self.procs):
            stop_proc(p)
        self.procs = []


class Limit(Subject):
    key, label = 'limit', 'limit'

    def __init__(self, ctx, threads=2):
        super().__init__(ctx)
        self.threads = threads
        if threads != 2:
            self.key, self.label = f'limit{threads}', f'limit, {threads} thread'

    def start(self, root):
        t0 = now_ns()
        p = subprocess.Popen([self.ctx.bin['limit'], '-t', str(self.threads), root],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.procs = [p]
        read_until(p.stdout, 'ready', 600, p)
        return now_ns() - t0


class UvWatch(Subject):
    key, label = 'uv', 'libuv fs_event'

    def start(self, root):
        t0 = now_ns()
        p = subprocess.Popen([self.ctx.bin['uvwatch'], root],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.procs = [p]
        read_until(p.stdout, 'ready', 600, p)
        return now_ns() - t0


ONELINER = ('while read -r p; do case $p in */__pycache__) rm -rf -- "$p";; '
            'esac; done')


class OneLiner(Subject):
    """inotifywait -m -r -e create,moved_to --format '%w%f' ROOT | while ..."""
    key, label = 'oneliner', 'one-liner'

    def start(self, root):
        t0 = now_ns()
        iw = subprocess.Popen(['inotifywait', '-m', '-r', '-e', 'create,moved_to',
                               '--format', '%w%f', root], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        sh = subprocess.Popen(['bash', '-c', ONELINER], stdin=iw.stdout)
        iw.stdout.close()
        self.procs = [iw, sh]
        read_until(iw.stderr, 'Watches established', 600, iw)
        t = now_ns() - t0
        drain_in_background(iw.stderr)
        return t

    def stop_pids(self):
        return [self.procs[0].pid]      # the queue is inotifywait's


class InotifywaitR(Subject):
    """inotifywait -r alone, for the crawl: time to "Watches established."."""
    key, label = 'inotifywait', 'inotifywait -r'

    def start(self, root):
        t0 = now_ns()
        iw = subprocess.Popen(['inotifywait', '-m', '-r', '-e', 'create', root],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
        self.procs = [iw]
        read_until(iw.stderr, 'Watches established', 600, iw)
        t = now_ns() - t0
        drain_in_background(iw.stderr)
        return t


class Pycached(Subject):
    """The daemon with private XDG dirs. With a working pycachectl, the root
    is added with `pycachectl add` (timed); otherwise it is in the config
    file and the time runs from exec to READY=1 on NOTIFY_SOCKET."""
    key, label = 'pycached', 'pycached'

    def start(self, root, use_ctl=None):
        use_ctl = self.ctx.ctl_ok if use_ctl is None else use_ctl
        self.home = self.ctx.fresh_xdg()
        self.sock = os.path.join(self.home, 'runtime', 'control.sock')
        conf = os.path.join(self.home, 'config', 'pycached', 'pycached.conf')
        with open(conf, 'w') as f:
            f.write('[pycached]\nlog_level = warning\n')
            if root and not use_ctl:
                f.write(f'\n[root {root}]\n')
        t0 = now_ns()
        self._spawn(conf)
        t_ready = now_ns()
        if not root or not use_ctl:
            return t_ready - t0
        t0 = now_ns()
        r = self.ctl('add', root)
        t = now_ns() - t0
        if r.returncode:
            raise SubjectError(f'pycachectl add failed ({r.returncode}): '
                               f'{r.stderr.strip()[:200]}')
        return t

    def _spawn(self, conf):
        h = self.home
        nsock = os.path.join(h, 'notify.sock')
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(nsock)
        env = self.ctx.env_for(h)
        env['NOTIFY_SOCKET'] = nsock
        self.logfile = os.path.join(h, 'pycached.log')
        with open(self.logfile, 'w') as lf:
            p = subprocess.Popen([self.ctx.pycached, '--config', conf,
                                  '--socket', self.sock], env=env,
                                 stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
        self.procs = [p]
        deadline = time.monotonic() + 600
        try:
            while True:
                ns.settimeout(max(0.01, min(1.0, deadline - time.monotonic())))
                try:
                    msg = ns.recv(4096)
                except socket.timeout:
                    if p.poll() is not None:
                        raise SubjectError(f'pycached exited ({p.returncode}): '
                                           f'{self.log_tail()}')
                    if time.monotonic() > deadline:
                        raise SubjectError('pycached: no READY=1 in 600 s')
                    continue
                if b'READY=1' in msg.split(b'\n'):
                    return
        finally:
            ns.close()

    def ctl(self, *args):
        return subprocess.run([self.ctx.pycachectl, '--socket', self.sock] +
                              list(args), env=self.ctx.env_for(self.home),
                              capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600)

    def log_tail(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-400:].strip()
        except OSError:
            return ''


# --- the table --------------------------------------------------------------------

def fmt_time(ns):
    if ns is None:
        return 'n/a'
    if ns < 0:
        return 'never'
    if ns < 10**6:
        return f'{ns / 1e3:.0f} µs'
    if ns < 10**9:
        return f'{ns / 1e6:.1f} ms'
    return f'{ns / 1e9:.2f} s'


def fmt_ratio(r):
    return 'n/a' if r is None else f'{r:.2f}×'


def rotate(seq, k):
    """The round-k order of seq: A B C, then B C A, ..."""
    k %= len(seq)
    return seq[k:] + seq[:k]


def verdict(ok):
    if ok is None:
        return 'n/a'
    return 'ok' if ok else 'MISSED'


def row(name, **cells):
    return dict(name=name, **cells)


def render_table(rows):
    head = ['benchmark', 'pycached', 'limit', 'ratio (median of rounds)',
            'target', 'verdict', 'libuv fs_event', 'one-liner', 'others']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r.get(k, '') for k in ('name', 'pycached', 'limit', 'ratio',
                                         'target', 'verdict', 'uv', 'oneliner',
                                         'others')]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    return '\n'.join(lines)


def new_tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def new_tempdir_in(parent):
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix='pycached-bench.', dir=parent)
