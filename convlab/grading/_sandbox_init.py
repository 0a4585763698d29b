"""Start one command in a sandbox of its own (standard library only; run as a script).

``python -I -S _sandbox_init.py CONFIG.json`` is how :mod:`convlab.grading.sandbox`
starts a graded notebook's worker. Without root, with Linux namespaces (the way
bubblewrap works, docs/design.md "Grading"):

1. this process forks a child that unshares user, mount, PID, network, IPC and UTS
   namespaces; this process (still outside) writes the child's uid and gid maps: the
   child is root inside, the grader's user outside, and, when the grader runs as root,
   the student's user inside (uid 1000) is ``nobody`` outside;
2. the child forks the namespace's PID 1, which builds a new root on a tmpfs: the
   system and Python folders bound read-only (nothing else of the machine: no home, no
   teacher files, no other jobs), a fresh /proc of the new PID namespace, a minimal
   /dev, size-capped tmpfs for /tmp, /dev/shm, the home and the work folder (the
   submission's files are copied in), the job folder read-only; brings up loopback
   only (no route out); pivots into that root;
3. PID 1 becomes the student's user (or stays root without capabilities: bounding set
   emptied, secure bits locked, no new privileges), lowers its resource limits, keeps
   only the environment the config lists, and runs the command.

When this process dies (the grader kills it), the kernel's parent-death signal kills
the child, then PID 1, and with PID 1 every process of the namespace. Exit status: the
command's, or 125 with a reason on stderr when the sandbox could not be built.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 24, 28
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
SECURE_ALL = 0xEF  # noroot, no_setuid_fixup, keep_caps locked off, no ambient raise: locked
SYS_PIVOT_ROOT, SYS_MOUNT_SETATTR, SYS_CAPSET = 155, 442, 126  # x86_64
AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x8000, 1, 2, 4
STUDENT_UID = 1000
NOBODY = 65534

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags, data=None) -> None:
    enc = [None if v is None else str(v).encode() for v in (src, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]),
           f"mount {src} on {target}")


def read_only(target: str) -> None:
    """Make ``target`` and every mount below it read-only, nosuid, nodev."""
    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                       0, 0, 0)
    buf = ctypes.create_string_buffer(attr)
    _check(libc.syscall(SYS_MOUNT_SETATTR, -100, target.encode(), AT_RECURSIVE, buf,
                        len(attr)), f"read-only {target}")


def tmpfs(target: str, size: int, mode: str = "0755", owner: int = 0) -> None:
    os.makedirs(target, exist_ok=True)
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={size},mode={mode},uid={owner},gid={owner}")


def bind(root: str, path: str, writable: bool = False) -> None:
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(path, target, None, MS_BIND | MS_REC)
    if not writable:
        read_only(target)


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        import fcntl

        flags = 0x1 | 0x8 | 0x40  # IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH14s", b"lo", flags, b"\0" * 14))


def drop_privileges(student: bool) -> None:
    if student:  # root in the namespace becomes the student's user: capabilities go
        os.setgroups([])
        os.setresgid(STUDENT_UID, STUDENT_UID, STUDENT_UID)
        os.setresuid(STUDENT_UID, STUDENT_UID, STUDENT_UID)
        return
    libc.prctl(PR_SET_SECUREBITS, SECURE_ALL, 0, 0, 0)
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("Ii", 0x20080522, 0)
    _check(libc.syscall(SYS_CAPSET, ctypes.create_string_buffer(header),
                        ctypes.create_string_buffer(b"\0" * 24)), "capset")


def build_root(cfg: dict) -> None:
    root = cfg["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    tmpfs(root, 1 << 20)
    os.makedirs(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tmpfs(root + "/dev", 1 << 16)
    for node in ("null", "zero", "full", "random", "urandom"):
        bind(root, "/dev/" + node, writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    owner = cfg["owner"]
    tmpfs(root + "/dev/shm", cfg["shm_bytes"], "1777", owner)
    tmpfs(root + "/tmp", cfg["tmp_bytes"], "1777", owner)
    tmpfs(root + cfg["home"], cfg["home_bytes"], "0700", owner)
    # the Python that runs the notebook, read-only, bound AFTER the private /tmp and home:
    # a virtual environment under /tmp (a CI's fresh clone) or in a home stays visible
    for path in sorted(cfg["read_only"]):
        if os.path.lexists(path) and not any(
                path.startswith(p.rstrip("/") + "/") for p in cfg["read_only"] if p != path):
            bind(root, path)
    for path in cfg["hide"]:  # an installed convlab: its solutions stay out of sight
        if os.path.isdir(root + path):
            tmpfs(root + path, 4096)
            read_only(root + path)
    work = root + cfg["work"]
    tmpfs(work, cfg["work_bytes"], "0755", owner)
    shutil.copytree(cfg["work_src"], work, dirs_exist_ok=True, symlinks=True)
    for top, dirs, files in os.walk(work):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), owner, owner)
    for inside, outside in cfg["extra_read_only"].items():
        os.makedirs(root + inside, exist_ok=True)
        mount(outside, root + inside, None, MS_BIND | MS_REC)
        read_only(root + inside)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(root)
    _check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


def limits(cfg: dict) -> None:
    import resource

    for name, value in cfg["limits"].items():
        which = getattr(resource, name)
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def pid_one(cfg: dict) -> None:
    build_root(cfg)
    loopback_up()
    student = cfg["owner"] != 0
    drop_privileges(student)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a uid change cleared it
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    limits(cfg)
    os.chdir(cfg["cwd"])
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


def main(config: str) -> int:
    with open(config, encoding="utf-8") as f:
        cfg = json.load(f)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(go_w)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        flags = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
                 | CLONE_NEWUTS)
        ok = libc.unshare(flags) == 0
        os.write(ready_w, b"1" if ok else b"0")
        if not ok or os.read(go_r, 1) != b"1":
            os._exit(125)
        pid = os.fork()
        if pid == 0:
            try:
                pid_one(cfg)
            except BaseException as err:  # noqa: BLE001
                print(f"convlab sandbox: {err}", file=sys.stderr, flush=True)
            os._exit(125)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) != b"1":
        print(f"convlab sandbox: unshare: {os.strerror(ctypes.get_errno()) or 'refused'}",
              file=sys.stderr)
        os.waitpid(child, 0)
        return 125
    uid, gid = os.geteuid(), os.getegid()
    try:
        if uid == 0:  # root maps root (to build the root) and a student who is nobody
            uid_map = gid_map = f"0 0 1\n{STUDENT_UID} {NOBODY} 1\n"
        else:
            with open(f"/proc/{child}/setgroups", "w") as f:
                f.write("deny")
            uid_map, gid_map = f"0 {uid} 1\n", f"0 {gid} 1\n"
        with open(f"/proc/{child}/uid_map", "w") as f:
            f.write(uid_map)
        with open(f"/proc/{child}/gid_map", "w") as f:
            f.write(gid_map)
    except OSError as err:
        print(f"convlab sandbox: user namespace map: {err}", file=sys.stderr)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return 125
    os.write(go_w, b"1")
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
