"""The conv_backward exercise accepts its solution and realistic right answers, and rejects
the four classic mistakes by name: kernel not flipped, grad_output not dilated, padding
cropped on the wrong side, db not summed over N/H/W."""

from __future__ import annotations

import numpy as np

import convlab
import convlab.exercises as ex

EX = ex.conv_backward


def _verdict(fn, capsys):
    assert EX.check(fn) is None  # a notebook cell shows the message alone
    return EX.last_status == "correct", EX.last_status, capsys.readouterr().out


def _correlate(a, k, dilation):
    """Stride-1 correlation of a (N, C, H, W) with k (K, C, kh, kw), a student's NumPy."""
    kh, kw = k.shape[2:]
    dh, dw = dilation
    ho, wo = a.shape[2] - dh * (kh - 1), a.shape[3] - dw * (kw - 1)
    out = np.zeros((a.shape[0], k.shape[0], ho, wo))
    for p in range(kh):
        for q in range(kw):
            out += np.einsum("nchw,kc->nkhw", a[:, :, p * dh:p * dh + ho, q * dw:q * dw + wo],
                             k[:, :, p, q])
    return out


def _student(x, w, dout, stride, padding, dilation, flip=True, dilate=True, crop="right",
             db_axes=(0, 2, 3)):
    """dx the textbook way: dilate dout, pad it fully, correlate with the flipped kernel."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    if dilate:
        dd = np.zeros((n, w.shape[0], (dout.shape[2] - 1) * sh + 1, (dout.shape[3] - 1) * sw + 1))
        dd[:, :, ::sh, ::sw] = dout
    else:
        dd = dout
    eh, ew = dh * (kh - 1), dw * (kw - 1)
    # pad by (k-1)*d on the top/left, and enough at the bottom/right to reach hp x wp
    full = np.pad(dd, ((0, 0), (0, 0), (eh, max(0, hp - dd.shape[2])),
                       (ew, max(0, wp - dd.shape[3]))))
    kern = w[:, :, ::-1, ::-1] if flip else w
    dxp = _correlate(full, kern.transpose(1, 0, 2, 3), dilation)[:, :, :hp, :wp]
    if dxp.shape[2] < hp or dxp.shape[3] < wp:  # an undilated dout is too short
        dxp = np.pad(dxp, ((0, 0), (0, 0), (0, hp - dxp.shape[2]), (0, wp - dxp.shape[3])))
    dx = {"right": dxp[:, :, ph:ph + h, pw:pw + wd], "top-left": dxp[:, :, :h, :wd],
          "bottom-right": dxp[:, :, hp - h:, wp - wd:]}[crop]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dw_ = convlab.conv2d_weight(xp, w.shape, dout, stride, 0, dilation)
    return dx, dw_, dout.sum(axis=db_axes)


def test_solution_and_a_textbook_answer_are_accepted(capsys):
    assert _verdict(EX.solution(show=False), capsys)[:2] == (True, "correct")
    assert _verdict(_student, capsys)[:2] == (True, "correct")


def test_unflipped_kernel(capsys):
    ok, status, out = _verdict(lambda *a: _student(*a, flip=False), capsys)
    assert (ok, status) == (False, "incorrect") and "you did not flip the kernel" in out


def test_undilated_grad_output(capsys):
    ok, status, out = _verdict(lambda *a: _student(*a, dilate=False), capsys)
    assert (ok, status) == (False, "incorrect")
    assert "case 2/5" in out and "grad_output was not dilated for the stride" in out


def test_padding_cropped_on_the_wrong_side(capsys):
    for crop in ("top-left", "bottom-right"):
        ok, status, out = _verdict(lambda *a, crop=crop: _student(*a, crop=crop), capsys)
        assert (ok, status) == (False, "incorrect")
        assert "you cropped the padding on the wrong side" in out, out


def test_db_not_summed(capsys):
    for axes, words in (((2, 3), "you left out the batch axis"),
                        ((0,), "you left out the positions")):
        ok, _, out = _verdict(lambda *a, axes=axes: _student(*a, db_axes=axes), capsys)
        assert not ok and words in out, out

    def mean(*a):
        dx, dw, _ = _student(*a)
        return dx, dw, a[2].mean(axis=(0, 2, 3))

    ok, _, out = _verdict(mean, capsys)
    assert not ok and "you averaged instead" in out


def test_not_a_tuple_and_not_attempted(capsys):
    ok, status, out = _verdict(lambda *a: _student(*a)[0], capsys)
    assert status == "incorrect" and "return the three gradients as a tuple" in out

    def stub(x, w, dout, stride, padding, dilation):
        raise NotImplementedError

    assert _verdict(stub, capsys)[1] == "not attempted"


def test_inputs_must_not_be_modified(capsys):
    def clobber(x, w, dout, stride, padding, dilation):
        out = _student(x, w, dout, stride, padding, dilation)
        dout *= 0
        return out

    ok, status, out = _verdict(clobber, capsys)
    assert status == "incorrect" and "changed its input 'dout' in place" in out
