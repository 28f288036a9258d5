"""Crawl + watch and memory per directory (issue 7): every crawler on
synthetic and real trees, rounds interleaved as in benchmarks.py."""

import glob
import os

from harness import (InotifywaitR, Limit, Pycached, SubjectError, UvWatch,
                     fmt_ratio, fmt_time, log, median, ratios, rotate, row, rss,
                     verdict)


# --- crawl and memory ------------------------------------------------------------

def skeleton_copy(src, dst):
    """Directories, names and symlinks of src; files empty. The crawl reads
    names, never contents, so this costs the same to list as the original."""
    for d, dirs, files in os.walk(src):
        rel = os.path.relpath(d, src)
        out = os.path.join(dst, rel)
        os.makedirs(out, exist_ok=True)
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, name)
            try:
                if os.path.islink(p):
                    os.symlink(os.readlink(p), os.path.join(out, name))
                else:
                    open(os.path.join(out, name), 'w').close()
            except OSError:
                pass


def real_tree(ctx, pattern):
    name = 'real-' + pattern.strip('/').replace('/', '-').replace('*', 'X')
    dst = os.path.join(ctx.dir, 'trees', name)
    if not os.path.isdir(dst):
        for src in sorted(glob.glob(pattern)):
            if os.path.isdir(src) and not os.path.islink(src):
                skeleton_copy(src, os.path.join(dst, os.path.basename(src)))
    return dst


class Find:
    key, label = 'find', 'find -type d'

    def __init__(self, ctx):
        self.ctx = ctx

    def start(self, root):
        out = self.ctx.probe('exec', '--', 'find', root, '-type', 'd')
        return int(out.split()[0])

    def pids(self):
        return []

    def stop(self):
        pass


def crawl_tools(ctx):
    tools = [Limit(ctx), Limit(ctx, threads=1), Pycached(ctx), UvWatch(ctx)]
    if ctx.has_inotifywait:
        tools.append(InotifywaitR(ctx))
    return tools + [Find(ctx)]


def bench_crawl(ctx):
    sz = ctx.size
    trees = [('synthetic', ctx.tree('crawl-small', sz['crawl_small']), True),
             ('synthetic', ctx.tree('crawl-big', sz['crawl_big']), True)]
    trees += [(p, real_tree(ctx, p), False) for p in sz['real_trees']]
    ndirs = {t: ctx.probe_kv('count', t)['dirs'] + 1 for _, t, _ in trees}
    tools = crawl_tools(ctx)
    res = {}
    for rnd in range(sz['crawl_rounds']):
        for label, t, mem in trees:
            log(f'crawl round {rnd + 1}/{sz["crawl_rounds"]}: {ndirs[t]} dirs ({label})')
            for tool in rotate(tools, rnd):
                try:
                    ns = tool.start(t)
                    mem_b = rss(tool.pids()) if mem and tool.pids() else None
                except SubjectError as e:
                    log(f'{tool.label} on {t}: {e}')
                    ns, mem_b = None, None
                finally:
                    tool.stop()
                d = res.setdefault(t, {}).setdefault(tool.key, dict(ns=[], rss=[]))
                d['ns'].append(ns)
                d['rss'].append(mem_b)
    ctx.results['crawl'] = {t: dict(dirs=ndirs[t], **res[t]) for _, t, _ in trees}
    rows = []
    for label, t, synthetic in trees:
        # Issue 13: synthetic trees as fast as the limit, real ones within 1.1×.
        rows.append(crawl_row(f'crawl + watch, {ndirs[t]} dirs ({label})', res[t],
                              ndirs[t], 1.0 if synthetic else 1.1))
    rows.append(memory_row(ctx, res, trees[0][1], trees[1][1], ndirs))
    return rows


def crawl_row(name, r, n, target):
    # The floor is the faster of the limit crawler's 1- and 2-thread runs in
    # each round: threads cost more than they bring on a small tree.
    best = [min(a, b) for a, b in zip(r['limit']['ns'], r['limit1']['ns'])
            if a is not None and b is not None]

    def cell(k, times=None):
        times = times or r[k]['ns']
        t = median(times)
        rr = median(ratios(times, best))
        per = f', {t / n / 1e3:.1f} µs/dir' if t else ''
        return f'{fmt_time(t)}{per}' + (f', {fmt_ratio(rr)}' if k != 'best' else '')
    p = r['pycached']
    rr = median(ratios(p['ns'], best))
    others = '; '.join(f'{lab}: {cell(k)}' for k, lab in
                       (('limit', 'limit 2 threads'), ('limit1', 'limit 1 thread'),
                        ('inotifywait', 'inotifywait -r'), ('find', 'find -type d'))
                       if k in r)
    return row(name, pycached=cell('pycached').rsplit(',', 1)[0],
               limit=cell('best', best) + ' (best of 1, 2 threads)', ratio=fmt_ratio(rr),
               target=f'≤ {target}× limit', verdict=verdict(rr is not None and rr <= target),
               uv=cell('uv') if 'uv' in r else 'n/a', oneliner='', others=others)


def memory_row(ctx, res, small, big, ndirs):
    span = ndirs[big] - ndirs[small]
    per = {}
    for k in ('limit', 'pycached', 'uv', 'inotifywait'):
        if k in res[big] and k in res[small]:
            v = [(b - a) / span for a, b in zip(res[small][k]['rss'], res[big][k]['rss'])
                 if a is not None and b is not None]
            per[k] = median(v)
    ctx.results['memory'] = dict(bytes_per_dir=per, small=ndirs[small], big=ndirs[big])

    def cell(k):
        return 'n/a' if per.get(k) is None else f'{per[k]:.0f} B/dir'
    p = per.get('pycached')
    rr = p / per['limit'] if p is not None and per.get('limit') else None
    return row(f'memory (RSS, {ndirs[small]} → {ndirs[big]} dirs)',
               pycached=cell('pycached'), limit=cell('limit'), ratio=fmt_ratio(rr),
               target='≤ 64 B/dir', verdict=verdict(p is not None and p <= 64),
               uv=cell('uv'), oneliner='',
               others=f'inotifywait -r: {cell("inotifywait")}; kernel memory '
                      f'for the watches is not in RSS')
