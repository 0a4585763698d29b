"""What a trace found, as data: :class:`Trace` (counts per array, thread, block and
barrier phase, the reuse factor, the findings: out-of-bounds, races, uninitialised
shared memory, divergent barriers), :class:`ArrayInfo` and :class:`Finding`.

:func:`convlab.cuda_trace.trace` records a launch and hands its recorder to
:class:`Trace`, which does the analysis and owns the questions one may ask of it (the
module docstring of :mod:`convlab.cuda_trace` says what is measured and checked).  Split
from the recorder so that each file holds one subject; every name here is importable
from :mod:`convlab.cuda_trace` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

READ, WRITE, ATOMIC = 0, 1, 2
KINDS = ("read", "write", "atomic")


@dataclass(frozen=True)
class ArrayInfo:
    """One traced array: a kernel argument (global) or a ``cuda.shared.array`` (shared)."""

    name: str
    space: str  # "global" | "shared"
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Finding:
    """One kind of bug on one array; ``message`` names the first thread and index."""

    kind: str  # "out-of-bounds" | "race" | "uninitialised" | "divergent-barrier"
    message: str
    array: str | None = None
    index: tuple[int, ...] | None = None
    block: tuple[int, int, int] | None = None
    thread: tuple[int, int, int] | None = None
    count: int = 1  # how many accesses (or elements, or blocks) show it

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "array": self.array,
                "index": self.index, "block": self.block, "thread": self.thread,
                "count": self.count}



class Trace:
    """Every memory access of one launch, its summaries and its findings.

    Columns, one entry per access: ``array_id``, ``kind`` (0 read, 1 write, 2 atomic),
    ``addr`` (flat C-order element), ``phase``, ``block_id``, ``thread_id`` (linear,
    x fastest) and ``seq`` (the access's position in its thread's program order).
    """

    # rec: the launch's convlab.cuda_trace._Recorder (what every thread did)
    def __init__(self, rec: Any, kernel: str, seconds: float) -> None:
        self.kernel, self.seconds = kernel, seconds
        self._oob = rec.oob
        self.grid, self.block = rec.grid, rec.block
        self.arrays = list(rec.arrays)
        self.threads_per_block = int(np.prod(self.block))
        self.n_blocks = int(np.prod(self.grid))
        parts, owners = [], []
        for st in rec.finished:
            ev = np.frombuffer(st.buf, dtype=np.int64).reshape(-1, 3) if st.buf else \
                np.zeros((0, 3), np.int64)
            parts.append(ev)
            owners.append((st.block, st.thread, len(ev)))
        ev = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        lens = np.array([n for _, _, n in owners], dtype=np.int64)
        self.array_id = ev[:, 0] // 4
        self.kind = ev[:, 0] % 4
        self.addr = ev[:, 1]
        self.phase = ev[:, 2]
        self.block_id = np.repeat(np.array([b for b, _, _ in owners], np.int64), lens)
        self.thread_id = np.repeat(np.array([t for _, t, _ in owners], np.int64), lens)
        starts = np.cumsum(lens) - lens
        self.seq = np.arange(len(ev), dtype=np.int64) - np.repeat(starts, lens)
        self._barriers = {(st.block, st.thread): st.sites for st in rec.finished}
        self.findings: list[Finding] = self._find()

    def __repr__(self) -> str:
        return (f"<Trace of {self.kernel}[{self.grid}, {self.block}]: {len(self.addr):,} "
                f"accesses, {len(self.findings)} finding(s)>")

    # ------------------------------------------------------------- identities
    def block_index(self, block_id: int) -> tuple[int, int, int]:
        gx, gy, _ = self.grid
        return (int(block_id % gx), int(block_id // gx % gy), int(block_id // (gx * gy)))

    def thread_index(self, thread_id: int) -> tuple[int, int, int]:
        bx, by, _ = self.block
        return (int(thread_id % bx), int(thread_id // bx % by), int(thread_id // (bx * by)))

    def _block_id(self, block: Any) -> int:
        b = tuple(block) + (0,) * (3 - len(tuple(block))) if not isinstance(block, int) else (
            block, 0, 0)
        gx, gy, _ = self.grid
        return b[0] + gx * (b[1] + gy * b[2])

    def _thread_id(self, thread: Any) -> int:
        t = tuple(thread) + (0,) * (3 - len(tuple(thread))) if not isinstance(thread, int) \
            else (thread, 0, 0)
        bx, by, _ = self.block
        return t[0] + bx * (t[1] + by * t[2])

    def info(self, name: str) -> ArrayInfo:
        for a in self.arrays:
            if a.name == name:
                return a
        raise KeyError(f"no traced array {name!r}; the traced arrays are "
                       f"{[a.name for a in self.arrays]}")

    def _aid(self, name: str) -> int:
        return self.arrays.index(self.info(name))

    def _where(self, array: str, idx: tuple[int, ...] | int) -> str:
        shown = ", ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        return f"{array}[{shown}]"

    def _who(self, block_id: int, thread_id: int) -> str:
        return f"thread {self.thread_index(thread_id)} of block {self.block_index(block_id)}"

    def _unravel(self, aid: int, addr: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(int(addr), self.arrays[aid].shape))

    # ------------------------------------------------------------- selections
    def _mask(self, array: str | None = None, kind: str | None = None, space: str | None = None,
              block: Any = None, thread: Any = None, phase: int | None = None) -> np.ndarray:
        m = np.ones(len(self.addr), bool)
        if array is not None:
            m &= self.array_id == self._aid(array)
        if kind is not None:
            m &= self.kind == KINDS.index(kind)
        if space is not None:
            ids = [i for i, a in enumerate(self.arrays) if a.space == space]
            m &= np.isin(self.array_id, ids)
        if block is not None:
            m &= self.block_id == self._block_id(block)
        if thread is not None:
            m &= self.thread_id == self._thread_id(thread)
        if phase is not None:
            m &= self.phase == phase
        return m

    def indices(self, array: str, kind: str = "read", **where: Any) -> list[tuple[int, ...]]:
        """Element indices of ``array`` accessed (``kind``), in order, optionally only by
        one ``block`` / ``thread`` (tuples) or in one barrier ``phase``."""
        m = self._mask(array, kind, **where)
        aid = self._aid(array)
        return [self._unravel(aid, a) for a in self.addr[m]]

    def count_map(self, array: str, kind: str = "read", **where: Any) -> np.ndarray:
        """How many times each element of ``array`` was accessed (an array of its shape)."""
        info = self.info(array)
        m = self._mask(array, kind, **where)
        return np.bincount(self.addr[m], minlength=info.size).reshape(info.shape)

    # ------------------------------------------------------------- summaries
    def counts(self) -> dict[str, dict[str, Any]]:
        """Per array: its space, reads, writes, atomics, distinct elements read and
        written, and ``reuse`` = accesses / distinct elements accessed."""
        out = {}
        for aid, a in enumerate(self.arrays):
            m = self.array_id == aid
            k = self.kind[m]
            row: dict[str, Any] = {"space": a.space, "elements": a.size}
            for kind_id, kind in enumerate(KINDS):
                row[kind + "s"] = int(np.count_nonzero(k == kind_id))
            addr = self.addr[m]
            if a.space == "shared":  # one copy per block: an address is (block, element)
                addr = self.block_id[m] * a.size + addr
            row["distinct_read"] = int(np.unique(addr[k == READ]).size)
            row["distinct_written"] = int(np.unique(addr[k != READ]).size)
            distinct = int(np.unique(addr).size)
            row["reuse"] = int(m.sum()) / distinct if distinct else 0.0
            out[a.name] = row
        return out

    def totals(self) -> dict[str, int]:
        """Reads and writes (atomics count as both) per memory space, over the launch."""
        out = {}
        for space in ("global", "shared"):
            m = self._mask(space=space)
            k = self.kind[m]
            out[f"{space}_reads"] = int(np.count_nonzero(k != WRITE))
            out[f"{space}_writes"] = int(np.count_nonzero(k != READ))
        return out

    def per_thread(self, space: str = "global", kind: str = "read") -> np.ndarray:
        """Accesses per thread, shape (blocks, threads per block), in linear block
        (x fastest) and thread (x fastest) order."""
        m = self._mask(space=space, kind=kind)
        gid = self.block_id[m] * self.threads_per_block + self.thread_id[m]
        return np.bincount(gid, minlength=self.n_blocks * self.threads_per_block).reshape(
            self.n_blocks, self.threads_per_block)

    def per_block(self, space: str = "global", kind: str = "read") -> np.ndarray:
        """Accesses per block, in linear block order (x fastest)."""
        return self.per_thread(space, kind).sum(axis=1)

    def phases(self) -> list[dict[str, int]]:
        """Accesses in each barrier phase (summed over blocks): phase p is what threads
        did after passing p ``syncthreads``."""
        rows = []
        for p in range(int(self.phase.max()) + 1 if len(self.phase) else 0):
            row = {"phase": p}
            for space in ("global", "shared"):
                for kind in ("read", "write"):
                    row[f"{space}_{kind}s"] = int(np.count_nonzero(
                        self._mask(space=space, kind=kind, phase=p)))
            rows.append(row)
        return rows

    def barriers_per_thread(self) -> np.ndarray:
        """How many ``syncthreads`` each thread passed, shape (blocks, threads per block)."""
        out = np.zeros((self.n_blocks, self.threads_per_block), np.int64)
        for (b, t), sites in self._barriers.items():
            out[b, t] = len(sites)
        return out

    def staged(self, shared: str, block: Any = (0, 0, 0), phase: int | None = None,
               source: str | None = None
               ) -> dict[tuple[int, ...], tuple[str, tuple[int, ...]] | None]:
        """Where each element of ``shared`` that ``block`` wrote came from: the global
        (array, index) its writer read just before (since its previous shared write), or
        None for a constant (the zeros of padding).  ``phase``: only writes in that phase;
        ``source``: only reads of that global array count (a kernel may read, say, its
        bias before it stages).  Attribution by program order, which fits copy loops like
        ``s[e] = x[...]``."""
        sid, b = self._aid(shared), self._block_id(block)
        src = None if source is None else self._aid(source)
        m = self.block_id == b
        out: dict[tuple[int, ...], tuple[str, tuple[int, ...]] | None] = {}
        for t in np.unique(self.thread_id[m]):
            sel = np.flatnonzero(m & (self.thread_id == t))
            sel = sel[np.argsort(self.seq[sel], kind="stable")]
            last: tuple[int, int] | None = None
            for e in sel:
                aid, kind = int(self.array_id[e]), int(self.kind[e])
                if self.arrays[aid].space == "global" and kind == READ:
                    if src is None or aid == src:
                        last = (aid, int(self.addr[e]))
                elif self.arrays[aid].space == "shared" and kind == WRITE:
                    if aid == sid and (phase is None or self.phase[e] == phase):
                        key = self._unravel(sid, int(self.addr[e]))
                        out[key] = None if last is None else (
                            self.arrays[last[0]].name, self._unravel(*last))
                    last = None
        return out

    def table(self) -> str:
        """Per array: reads, writes, distinct elements, reuse."""
        lines = [f"{'array':<10}{'space':<8}{'shape':<18}{'reads':>9}{'writes':>8}"
                 f"{'distinct':>10}{'reuse':>8}"]
        for name, c in self.counts().items():
            shape = str(self.info(name).shape)
            distinct = max(c["distinct_read"], c["distinct_written"])
            lines.append(f"{name:<10}{c['space']:<8}{shape:<18}{c['reads'] + c['atomics']:>9,}"
                         f"{c['writes'] + c['atomics']:>8,}{distinct:>10,}{c['reuse']:>8.2f}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The launch, the per-array table, per-thread spread, phases and findings."""
        n = self.n_blocks * self.threads_per_block
        g = self.per_thread("global", "read")
        tot = self.totals()
        lines = [f"{self.kernel}[{self.grid}, {self.block}]: {self.n_blocks} blocks x "
                 f"{self.threads_per_block} threads = {n} threads, traced in "
                 f"{self.seconds:.2f} s", self.table(),
                 f"global reads {tot['global_reads']:,} (per thread {g.min()}..{g.max()}), "
                 f"global writes {tot['global_writes']:,}; shared reads "
                 f"{tot['shared_reads']:,}, shared writes {tot['shared_writes']:,}"]
        phases = self.phases()
        if len(phases) > 1:
            lines.append("per barrier phase (global r/w, shared r/w): " + "; ".join(
                f"{p['phase']}: {p['global_reads']}/{p['global_writes']}, "
                f"{p['shared_reads']}/{p['shared_writes']}" for p in phases[:8])
                + (" ..." if len(phases) > 8 else ""))
        lines.append(f"findings: {len(self.findings)}" if self.findings else "findings: none")
        lines += [f"  {f.kind}: {f.message}" for f in self.findings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    @property
    def ok(self) -> bool:
        return not self.findings

    def raise_for_findings(self) -> None:
        """AssertionError listing every finding (for tests)."""
        if self.findings:
            raise AssertionError("\n".join(f"{f.kind}: {f.message}" for f in self.findings))

    # ------------------------------------------------------------- checks
    def _find(self) -> list[Finding]:
        return (self._find_out_of_bounds() + self._find_divergent_barriers()
                + self._find_races() + self._find_uninitialised())

    def _find_out_of_bounds(self) -> list[Finding]:
        found = []
        groups: dict[tuple[int, int], list] = {}
        for b, t, aid, kind, idx, _ in sorted(self._oob, key=lambda r: (r[0], r[1], r[5])):
            groups.setdefault((aid, kind), []).append((b, t, idx))
        for (aid, kind), hits in sorted(groups.items()):
            b, t, idx = hits[0]
            a = self.arrays[aid]
            verb = {READ: "reads", WRITE: "writes", ATOMIC: "updates (atomic)"}[kind]
            negative = any(i < 0 for i in idx)
            more = len(hits) - 1
            threads = len({(h[0], h[1]) for h in hits})
            msg = (f"{self._who(b, t)} {verb} {self._where(a.name, idx)}, outside "
                   f"{a.name}'s shape {a.shape}"
                   + (" (a negative index: Numba wraps it around to the other end)"
                      if negative else "")
                   + (f"; {more} more out-of-bounds {KINDS[kind]}s of {a.name} by "
                      f"{threads} thread(s)" if more else ""))
            found.append(Finding("out-of-bounds", msg, a.name, idx, self.block_index(b),
                                 self.thread_index(t), len(hits)))
        return found

    def _find_divergent_barriers(self) -> list[Finding]:
        found = []
        by_block: dict[int, dict[int, list]] = {}
        for (b, t), sites in self._barriers.items():
            by_block.setdefault(b, {})[t] = sites
        bad_blocks = []
        for b in sorted(by_block):
            threads = by_block[b]
            counts = {t: len(s) for t, s in threads.items()}
            if len(set(counts.values())) > 1:
                few = min(counts, key=lambda t: (counts[t], t))
                many = max(counts, key=lambda t: (counts[t], -t))
                bad_blocks.append((b, f"{self._who(b, few)} passed {counts[few]} "
                                   f"syncthreads, thread {self.thread_index(many)} passed "
                                   f"{counts[many]}: a barrier not every thread reaches (an "
                                   "early return, or a syncthreads inside an if on the "
                                   "thread index)", few))
                continue
            for p in range(max(counts.values(), default=0)):
                sites = {t: s[p] for t, s in threads.items()}
                if len(set(sites.values())) > 1:
                    t0 = min(sites)
                    t1 = min(t for t in sites if sites[t] != sites[t0])
                    bad_blocks.append((b, f"at barrier {p}, {self._who(b, t0)} waits at the "
                                       f"syncthreads on line {sites[t0][1]}, thread "
                                       f"{self.thread_index(t1)} at the one on line "
                                       f"{sites[t1][1]}: different barriers (a syncthreads "
                                       "inside an if on the thread index)", t0))
                    break
        if bad_blocks:
            b, msg, t = bad_blocks[0]
            if len(bad_blocks) > 1:
                msg += f"; {len(bad_blocks) - 1} more block(s) like it"
            found.append(Finding("divergent-barrier", msg, None, None, self.block_index(b),
                                 self.thread_index(t), len(bad_blocks)))
        return found

    @staticmethod
    def _group(*cols: np.ndarray) -> tuple[np.ndarray, int]:
        """Dense group ids of the rows of ``cols`` (and how many groups)."""
        if not len(cols[0]):
            return np.zeros(0, np.int64), 0
        _, inv = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        return inv, int(inv.max()) + 1

    def _find_races(self) -> list[Finding]:
        """A group of accesses to one element that nothing orders (same block and phase;
        for global memory also: all blocks) races if it has a plain write and 2+ threads."""
        found: list[Finding] = []
        shared_ids = [i for i, a in enumerate(self.arrays) if a.space == "shared"]
        is_shared = np.isin(self.array_id, shared_ids)
        gthread = self.block_id * self.threads_per_block + self.thread_id
        # only elements that someone writes (not atomically) can race
        w = self.kind == WRITE
        elem_block = np.where(is_shared, self.block_id, -1)
        wkeys = np.unique(np.stack([self.array_id[w], elem_block[w], self.addr[w]], 1), axis=0)
        if not len(wkeys):
            return found
        keys = np.stack([self.array_id, elem_block, self.addr], 1)
        # rows whose element is written: match by a view on the 3 columns
        kv = np.ascontiguousarray(keys).view([("a", np.int64), ("b", np.int64),
                                              ("c", np.int64)]).reshape(-1)
        wv = np.ascontiguousarray(wkeys).view(kv.dtype).reshape(-1)
        rel = np.flatnonzero(np.isin(kv, wv))
        racy: dict[int, list[tuple[int, int]]] = {}  # array id -> [(row of the write, other)]
        # 1. same block, same phase (shared and global)
        gid, n = self._group(self.array_id[rel], elem_block[rel], self.addr[rel],
                             self.block_id[rel], self.phase[rel])
        self._collect(rel, gid, n, gthread, racy)
        # 2. global memory, different blocks: no barrier orders blocks
        glob = rel[~is_shared[rel]]
        gid, n = self._group(self.array_id[glob], self.addr[glob])
        self._collect(glob, gid, n, self.block_id, racy, gthread)
        for aid in sorted(racy):
            pairs = sorted(racy[aid], key=lambda p: (self.block_id[p[0]], self.thread_id[p[0]],
                                                     self.addr[p[0]]))
            wrow, orow = pairs[0]
            a = self.arrays[aid]
            idx = self._unravel(aid, int(self.addr[wrow]))
            verb = "writes it too" if self.kind[orow] != READ else "reads it"
            same_block = self.block_id[wrow] == self.block_id[orow]
            why = (f"in the same barrier phase {int(self.phase[wrow])}: no cuda.syncthreads() "
                   "between them" if same_block else
                   "from another block: no barrier orders two blocks")
            elements = len({int(self.addr[p[0]]) + (int(self.block_id[p[0]]) << 40)
                            for p in pairs})
            msg = (f"{self._who(self.block_id[wrow], self.thread_id[wrow])} writes "
                   f"{self._where(a.name, idx)} and "
                   f"{self._who(self.block_id[orow], self.thread_id[orow])} {verb}, {why}"
                   + (f"; {elements - 1} more element(s) of {a.name} race"
                      if elements > 1 else ""))
            found.append(Finding("race", msg, a.name, idx,
                                 self.block_index(self.block_id[wrow]),
                                 self.thread_index(self.thread_id[wrow]), elements))
        return found

    def _collect(self, rows: np.ndarray, gid: np.ndarray, n: int, who: np.ndarray,
                 racy: dict[int, list[tuple[int, int]]], thread: np.ndarray | None = None
                 ) -> None:
        """Groups with a plain write and 2+ distinct ``who`` (threads, or blocks): for
        each, one (write row, row of another thread/block) example."""
        if not n:
            return
        whos = who[rows]
        pair_ids, _ = self._group(gid, whos)
        distinct = np.bincount(gid[np.unique(pair_ids, return_index=True)[1]], minlength=n)
        has_write = np.bincount(gid, weights=(self.kind[rows] == WRITE), minlength=n) > 0
        first = np.flatnonzero((distinct >= 2) & has_write)
        if not len(first):
            return
        order = np.argsort(gid, kind="stable")
        bounds = np.searchsorted(gid[order], np.arange(n + 1))
        for g in first[:10000]:
            members = rows[order[bounds[g]:bounds[g + 1]]]
            writes = members[self.kind[members] == WRITE]
            wrow = writes[np.lexsort((self.thread_id[writes], self.block_id[writes]))[0]]
            others = members[who[members] != who[wrow]]
            orow = others[np.lexsort((self.thread_id[others], self.block_id[others]))[0]]
            racy.setdefault(int(self.array_id[wrow]), []).append((int(wrow), int(orow)))

    def _find_uninitialised(self) -> list[Finding]:
        """Shared reads with no write to the element in an earlier phase (any thread of
        the block) and none earlier in this phase by the reading thread."""
        found = []
        for sid, a in enumerate(self.arrays):
            if a.space != "shared":
                continue
            m = self.array_id == sid
            rows = np.flatnonzero(m)
            if not len(rows):
                continue
            elem = self.block_id[rows] * a.size + self.addr[rows]
            wr = self.kind[rows] != READ
            first_w = np.full(self.n_blocks * a.size, np.iinfo(np.int64).max)
            np.minimum.at(first_w, elem[wr], self.phase[rows][wr])
            rd = ~wr
            suspect = rows[rd][first_w[elem[rd]] >= self.phase[rows][rd]]
            if not len(suspect):
                continue
            # the reading thread's own earlier write in the same phase initialises it
            own: dict[tuple[int, int, int, int], int] = {}  # -> its first write's seq
            for r in rows[wr]:
                k = (int(self.block_id[r]), int(self.thread_id[r]), int(self.phase[r]),
                     int(self.addr[r]))
                own[k] = min(own.get(k, 1 << 62), int(self.seq[r]))
            bad = [r for r in suspect
                   if own.get((int(self.block_id[r]), int(self.thread_id[r]),
                               int(self.phase[r]), int(self.addr[r])), 1 << 62)
                   > self.seq[r]]
            if not bad:
                continue
            bad.sort(key=lambda r: (self.block_id[r], self.thread_id[r], self.seq[r]))
            r = bad[0]
            idx = self._unravel(sid, int(self.addr[r]))
            elements = len({(int(self.block_id[x]), int(self.addr[x])) for x in bad})
            msg = (f"{self._who(self.block_id[r], self.thread_id[r])} reads "
                   f"{self._where(a.name, idx)} in barrier phase {int(self.phase[r])}, but no "
                   "thread wrote it before (shared memory starts as garbage; NaN here)"
                   + (f"; {elements - 1} more element(s) of {a.name} read uninitialised"
                      if elements > 1 else ""))
            found.append(Finding("uninitialised", msg, a.name, idx,
                                 self.block_index(self.block_id[r]),
                                 self.thread_index(self.thread_id[r]), elements))
        return found
