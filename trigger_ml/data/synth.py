"""Synthetic L1 events in the ADC2021 layout: a fast, seeded, physically motivated *toy*.

This is not a detector simulation. It reproduces the *structure* of the ADC2021 L1 dataset
(Particles (N, 19, 4): MET, 4 e/gamma, 4 muons, 10 jets) with kinematics that follow from
simple physics so that anomaly-detection studies behave qualitatively like on the real data.
Nothing here is tuned to CMS; use real ADC2021 files for physics conclusions.

Physics of the toy
------------------
* **Production.** Every hard system (W, Z, tt-bar pair, signal resonance) is produced with a
  falling transverse-momentum spectrum, pT = k((1-u)^(-1/a) - 1) (a Pareto/Lomax law: a soft
  bulk with a pT^-(a+1) tail), rapidity y ~ N(0, 1.8) and uniform phi. Its recoil appears as an
  ISR jet balancing the system in phi (with 20 % response smearing) when pT > 15 GeV.
* **Decays.** All decays are sequential two-body decays, isotropic in the parent rest frame and
  Lorentz-boosted to the lab; W/Z masses follow Breit-Wigner line shapes.
* **Taus** decay in the collinear approximation: 64.8 % hadronic (a jet carrying a fraction
  x ~ U(0.2, 1) of the tau momentum), 17.8 % to e and 17.4 % to mu (lepton fraction sampled from
  the massless spectrum f(x) = 5/3 - 3x^2 + 4/3 x^3); the neutrinos feed MET.
* **Backgrounds** (ADC2021 fractions): W -> l nu 59.2 % (l = e, mu, tau), QCD multijet 33.8 %
  (a pT^-5 dijet with an optional third jet, passing the lepton filter through a heavy-flavour
  semileptonic decay: lepton fraction z ~ Beta(2, 3), neutrino fraction ~ Beta(1, 3) of the rest),
  Z -> l l 6.7 %, tt-bar 0.3 % (t -> bW, W -> l nu with BR 0.108 per flavour, otherwise W -> qq').
* **Signals**: A(50) -> Z*Z* -> 4l (off-shell pair masses with m1 + m2 < 50 GeV, l = e, mu),
  LQ(80) -> b tau (pair produced), h0(60) -> tau tau, h+-(60) -> tau nu.
* **Pileup-like soft jets**: Poisson(1.2) jets per event with pT = 15 + Exp(6) GeV, |eta| < 4.7.
* **Detector**: acceptance |eta| < 2.5 for e/gamma and muons (pT > 3 GeV), |eta| < 4.7 for jets
  (pT > 15 GeV); L1-like resolutions: e/gamma 30 %/sqrt(pT) (+) 3 %, muons 12 %, jets
  120 %/sqrt(pT) (+) 10 % with a 0.95 response; angular smearing 0.01 (leptons) / 0.05 (jets).
  MET = |sum of neutrinos + mismeasurement of every object + lost objects + noise|, the noise
  being Gaussian with sigma = 0.4 sqrt(HT + 50 GeV) per component.
* **Trigger filter** (as in ADC2021): at least one e or mu with reconstructed pT > 23 GeV, applied
  to backgrounds and signals alike.

Generation is vectorised numpy, deterministic for a given (seed, number of events).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from trigger_ml.data.adc2021 import (
    N_COLUMNS,
    N_OBJECTS,
    OBJECT_SLICES,
    TYPE_CODES,
    EventsWriter,
)

#: ADC2021 background composition
BACKGROUND_FRACTIONS: dict[str, float] = {"W_lnu": 0.592, "QCD": 0.338, "Z_ll": 0.067, "ttbar": 0.003}
SIGNALS: tuple[str, ...] = ("Ato4l", "LQ_btau", "h0_tautau", "hplus_taunu")
#: integer process code stored per event in the optional ``process`` dataset
PROCESS_CODES: dict[str, int] = {
    "W_lnu": 0,
    "QCD": 1,
    "Z_ll": 2,
    "ttbar": 3,
    "Ato4l": 10,
    "LQ_btau": 11,
    "h0_tautau": 12,
    "hplus_taunu": 13,
}
GENERATOR_VERSION = "trigger_ml.synth/1"
#: the stage name recorded in generated files (HDF5 attribute ``trigger_ml_stage``)
STAGE = "data.generate"
_BLOCK = 50_000
_MAX_SLOTS = {"egamma": 4, "muon": 4, "jet": 10}

M_W, G_W, M_Z, G_Z, M_TOP, M_B, M_TAU = 80.4, 2.1, 91.19, 2.5, 172.5, 4.8, 1.777


# ----------------------------------------------------------------------------- kinematics
def _p4_from(pt, eta_or_y, phi, m, rapidity: bool = False) -> np.ndarray:
    mt = np.sqrt(m * m + pt * pt) if rapidity else pt
    if rapidity:
        e, pz = mt * np.cosh(eta_or_y), mt * np.sinh(eta_or_y)
    else:
        pz = pt * np.sinh(eta_or_y)
        e = np.sqrt(pt * pt + pz * pz + m * m)
    return np.stack([e, pt * np.cos(phi), pt * np.sin(phi), pz], axis=-1)


def _pt_eta_phi(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    px, py, pz = p4[:, 1], p4[:, 2], p4[:, 3]
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    return pt, eta, np.arctan2(py, px)


def _boost(p4: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Boost p4 (given in the parent rest frame) to the frame where the parent has 4-momentum ``parent``."""
    m = np.sqrt(np.maximum(parent[:, 0] ** 2 - (parent[:, 1:] ** 2).sum(1), 1e-12))
    beta = parent[:, 1:] / parent[:, :1]
    b2 = np.maximum((beta**2).sum(1), 1e-18)
    gamma = parent[:, 0] / m
    bp = (beta * p4[:, 1:]).sum(1)
    coef = (gamma - 1.0) / b2 * bp + gamma * p4[:, 0]
    out = np.empty_like(p4)
    out[:, 0] = gamma * (p4[:, 0] + bp)
    out[:, 1:] = p4[:, 1:] + coef[:, None] * beta
    return out


def _decay2(rng: np.random.Generator, parent: np.ndarray, m1, m2) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay of ``parent`` into masses m1, m2 (scalars or per-event arrays)."""
    n = len(parent)
    mp = np.sqrt(np.maximum(parent[:, 0] ** 2 - (parent[:, 1:] ** 2).sum(1), 1e-12))
    m1 = np.broadcast_to(np.asarray(m1, dtype=float), (n,))
    m2 = np.broadcast_to(np.asarray(m2, dtype=float), (n,))
    arg = (mp**2 - (m1 + m2) ** 2) * (mp**2 - (m1 - m2) ** 2)
    p = np.sqrt(np.maximum(arg, 0.0)) / (2 * mp)
    cos = rng.uniform(-1, 1, n)
    sin = np.sqrt(1 - cos**2)
    phi = rng.uniform(-np.pi, np.pi, n)
    d = np.stack([sin * np.cos(phi), sin * np.sin(phi), cos], axis=-1) * p[:, None]
    a = np.concatenate([np.sqrt(p**2 + m1**2)[:, None], d], axis=1)
    b = np.concatenate([np.sqrt(p**2 + m2**2)[:, None], -d], axis=1)
    return _boost(a, parent), _boost(b, parent)


def _breit_wigner(rng: np.random.Generator, m: float, g: float, n: int, lo: float, hi: float) -> np.ndarray:
    x = m + 0.5 * g * np.tan(np.pi * (rng.random(n) - 0.5))
    bad = (x < lo) | (x > hi)
    while bad.any():
        x[bad] = m + 0.5 * g * np.tan(np.pi * (rng.random(bad.sum()) - 0.5))
        bad = (x < lo) | (x > hi)
    return x


def _produce(rng: np.random.Generator, n: int, mass, k: float = 20.0, a: float = 2.2) -> np.ndarray:
    """A system of mass ``mass`` with a falling pT spectrum, y ~ N(0, 1.8), uniform phi."""
    pt = np.minimum(k * ((1 - rng.random(n)) ** (-1 / a) - 1), 1500.0)
    y = rng.normal(0, 1.8, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    return _p4_from(pt, y, phi, np.broadcast_to(mass, (n,)), rapidity=True)


# ----------------------------------------------------------------------------- event record
class _Event:
    """Truth-level objects of a batch of n events, before detector effects."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.objs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {k: [] for k in _MAX_SLOTS}
        self.nu = np.zeros((n, 2))
        self._kin: dict[int, tuple[np.ndarray, tuple]] = {}

    def _pt_eta_phi(self, p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pT, eta, phi of p4, computed once per 4-vector array (objects are routed several times)."""
        hit = self._kin.get(id(p4))
        if hit is None or hit[0] is not p4:
            hit = self._kin[id(p4)] = (p4, _pt_eta_phi(p4))
        return hit[1]

    def add(self, kind: str, p4: np.ndarray, mask: np.ndarray | None = None, scale=None) -> None:
        pt, eta, phi = self._pt_eta_phi(p4)
        if scale is not None:
            pt = pt * scale
        if mask is not None:
            pt = np.where(mask, pt, 0.0)
        self.objs[kind].append((pt, eta, phi))

    def add_nu(self, p4: np.ndarray, mask: np.ndarray | None = None, scale=None) -> None:
        v = p4[:, 1:3] if scale is None else p4[:, 1:3] * np.asarray(scale)[:, None]
        self.nu += v if mask is None else np.where(mask[:, None], v, 0.0)

    def add_recoil(self, rng: np.random.Generator, system: np.ndarray) -> None:
        """ISR jet balancing the produced system in the transverse plane."""
        pt, _, phi = self._pt_eta_phi(system)
        jpt = pt * np.clip(rng.normal(1.0, 0.2, self.n), 0.3, None)
        jphi = phi + np.pi + rng.normal(0, 0.15, self.n)
        jeta = rng.normal(0, 2.0, self.n)
        self.add("jet", _p4_from(jpt, jeta, jphi, 0.0), mask=pt > 15)

    def add_lepton(self, rng: np.random.Generator, p4: np.ndarray, flavour: np.ndarray, mask=None) -> None:
        """Route a charged lepton of flavour 0 e, 1 mu, 2 tau (taus are decayed)."""
        m = np.ones(self.n, bool) if mask is None else mask
        self.add("egamma", p4, m & (flavour == 0))
        self.add("muon", p4, m & (flavour == 1))
        self.add_tau(rng, p4, m & (flavour == 2))

    def add_tau(self, rng: np.random.Generator, p4: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Collinear tau decay: hadronic jet or e/mu with neutrinos taking the rest."""
        m = np.ones(self.n, bool) if mask is None else mask
        u = rng.random(self.n)
        had, to_e, to_mu = u < 0.648, (u >= 0.648) & (u < 0.826), u >= 0.826
        x = np.where(had, rng.uniform(0.2, 1.0, self.n), _lepton_fraction(rng, self.n))
        self.add("jet", p4, m & had, scale=x)
        self.add("egamma", p4, m & to_e, scale=x)
        self.add("muon", p4, m & to_mu, scale=x)
        self.add_nu(p4, m, scale=1 - x)


def _lepton_fraction(rng: np.random.Generator, n: int) -> np.ndarray:
    """Energy fraction of the charged lepton in tau -> l nu nu (massless, unpolarised)."""
    out = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        x = rng.random(len(todo))
        ok = rng.random(len(todo)) * (5 / 3) < 5 / 3 - 3 * x**2 + 4 / 3 * x**3
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


# ----------------------------------------------------------------------------- processes
def _w_lnu(rng, n):
    ev = _Event(n)
    w = _produce(rng, n, _breit_wigner(rng, M_W, G_W, n, 50, 150))
    lep, nu = _decay2(rng, w, 0.0, 0.0)
    ev.add_lepton(rng, lep, rng.integers(0, 3, n))
    ev.add_nu(nu)
    ev.add_recoil(rng, w)
    return ev


def _z_ll(rng, n):
    ev = _Event(n)
    z = _produce(rng, n, _breit_wigner(rng, M_Z, G_Z, n, 60, 150))
    l1, l2 = _decay2(rng, z, 0.0, 0.0)
    fl = rng.integers(0, 3, n)
    ev.add_lepton(rng, l1, fl)
    ev.add_lepton(rng, l2, fl)
    ev.add_recoil(rng, z)
    return ev


def _qcd(rng, n):
    ev = _Event(n)
    # heavy-flavour lepton fraction z, sampled with the weight of passing the 23 GeV filter
    z = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        zz = rng.beta(2, 3, len(todo))
        w = (np.maximum(30.0, 23.0 / zz) / 30.0) ** -4
        ok = rng.random(len(todo)) < w
        z[todo[ok]] = zz[ok]
        todo = todo[~ok]
    pmin = np.maximum(30.0, 23.0 / z)
    pt1 = np.minimum(pmin * rng.random(n) ** (-1 / 4), 2000.0)
    phi1 = rng.uniform(-np.pi, np.pi, n)
    pt2 = pt1 * np.clip(rng.normal(0.85, 0.12, n), 0.3, 1.2)
    phi2 = phi1 + np.pi + rng.normal(0, 0.25, n)
    eta1, eta2 = rng.normal(0, 2.0, n), rng.normal(0, 2.0, n)
    j1, j2 = _p4_from(pt1, eta1, phi1, 0.0), _p4_from(pt2, eta2, phi2, 0.0)
    # third jet from hard radiation
    third = rng.random(n) < 0.45
    pt3 = pt1 * rng.uniform(0.1, 0.5, n)
    ev.add("jet", _p4_from(pt3, rng.normal(0, 2.2, n), rng.uniform(-np.pi, np.pi, n), 0.0), third)
    # semileptonic heavy-flavour decay in the leading jet: lepton + neutrino + remaining jet
    znu = (1 - z) * rng.beta(1, 3, n)
    lep = _p4_from(pt1 * z, eta1 + rng.normal(0, 0.05, n), phi1 + rng.normal(0, 0.05, n), 0.0)
    ev.add_lepton(rng, lep, rng.integers(0, 2, n))
    ev.add_nu(j1, scale=znu)
    ev.add("jet", j1, scale=1 - z - znu)
    ev.add("jet", j2)
    return ev


def _w_decay(ev: _Event, rng, w):
    """W -> l nu (BR 0.108 per flavour) or W -> q q'."""
    n = ev.n
    u = rng.random(n)
    lep = u < 3 * 0.108
    fl = np.minimum((u / 0.108).astype(int), 2)
    a, b = _decay2(rng, w, 0.0, 0.0)
    ev.add_lepton(rng, a, fl, lep)
    ev.add_nu(b, lep)
    ev.add("jet", a, ~lep)
    ev.add("jet", b, ~lep)


def _ttbar(rng, n):
    ev = _Event(n)
    mtt = 2 * M_TOP + rng.exponential(120.0, n)
    tt = _produce(rng, n, mtt, k=30.0)
    t1, t2 = _decay2(rng, tt, M_TOP, M_TOP)
    for t in (t1, t2):
        b, w = _decay2(rng, t, M_B, _breit_wigner(rng, M_W, G_W, n, 50, 120))
        ev.add("jet", b)
        _w_decay(ev, rng, w)
    ev.add_recoil(rng, tt)
    return ev


def _a_4l(rng, n):
    ev = _Event(n)
    a = _produce(rng, n, 50.0, k=25.0)
    m1 = rng.uniform(12.0, 40.0, n)
    m2 = 4.0 + rng.random(n) * np.maximum(50.0 - m1 - 4.5, 0.1)
    z1, z2 = _decay2(rng, a, m1, m2)
    for z in (z1, z2):
        l1, l2 = _decay2(rng, z, 0.0, 0.0)
        fl = rng.integers(0, 2, n)
        ev.add_lepton(rng, l1, fl)
        ev.add_lepton(rng, l2, fl)
    ev.add_recoil(rng, a)
    return ev


def _lq_btau(rng, n):
    ev = _Event(n)
    pair = _produce(rng, n, 160.0 + rng.exponential(60.0, n), k=25.0)
    for lq in _decay2(rng, pair, 80.0, 80.0):
        b, tau = _decay2(rng, lq, M_B, M_TAU)
        ev.add("jet", b)
        ev.add_tau(rng, tau)
    ev.add_recoil(rng, pair)
    return ev


def _h0_tautau(rng, n):
    ev = _Event(n)
    h = _produce(rng, n, 60.0, k=25.0)
    for tau in _decay2(rng, h, M_TAU, M_TAU):
        ev.add_tau(rng, tau)
    ev.add_recoil(rng, h)
    return ev


def _hplus_taunu(rng, n):
    ev = _Event(n)
    h = _produce(rng, n, 60.0, k=25.0)
    tau, nu = _decay2(rng, h, M_TAU, 0.0)
    ev.add_tau(rng, tau)
    ev.add_nu(nu)
    ev.add_recoil(rng, h)
    return ev


_PROCESSES: dict[str, Callable[[np.random.Generator, int], _Event]] = {
    "W_lnu": _w_lnu,
    "QCD": _qcd,
    "Z_ll": _z_ll,
    "ttbar": _ttbar,
    "Ato4l": _a_4l,
    "LQ_btau": _lq_btau,
    "h0_tautau": _h0_tautau,
    "hplus_taunu": _hplus_taunu,
}


# ----------------------------------------------------------------------------- detector
_RESOLUTION = {
    # kind: (stochastic, constant, response, angular, |eta| max, pT min)
    "egamma": (0.30, 0.03, 1.00, 0.01, 2.5, 3.0),
    "muon": (0.0, 0.12, 1.00, 0.01, 2.5, 3.0),
    "jet": (1.20, 0.10, 0.95, 0.05, 4.7, 15.0),
}


def _smear(rng: np.random.Generator, kind: str, parts) -> tuple[np.ndarray, ...]:
    """Smear and accept the candidates of one object type: (true px, py, reco pt, eta, phi)."""
    stoch, const, resp, ang, etamax, ptmin = _RESOLUTION[kind]
    pt = np.stack([p[0] for p in parts], 1).astype(np.float32)
    eta = np.stack([p[1] for p in parts], 1).astype(np.float32)
    phi = np.stack([p[2] for p in parts], 1).astype(np.float32)
    cos, sin = np.cos(phi), np.sin(phi)
    sigma = np.sqrt(stoch**2 / np.maximum(pt, 1e-3) + const**2)
    rpt = pt * resp * np.clip(1 + sigma * rng.standard_normal(pt.shape, dtype=np.float32), 0.05, None)
    reta = eta + ang * rng.standard_normal(pt.shape, dtype=np.float32)
    dphi = ang * rng.standard_normal(pt.shape, dtype=np.float32)
    rphi = (phi + dphi + np.pi) % (2 * np.pi) - np.pi
    ok = (pt > 0) & (np.abs(reta) < etamax) & (rpt > ptmin)
    rpt = np.where(ok, rpt, 0.0)
    # what is not measured shows up as missing momentum (small-angle rotation of the reco vector)
    lost_x = (pt * cos - rpt * (cos - dphi * sin)).sum(1)
    lost_y = (pt * sin - rpt * (sin + dphi * cos)).sum(1)
    return lost_x, lost_y, rpt, reta, rphi


def _fill(out: np.ndarray, kind: str, rpt, reta, rphi) -> None:
    """Write the pT-ordered leading candidates of one type into their rows of ``out``."""
    n = len(out)
    k = min(_MAX_SLOTS[kind], rpt.shape[1])
    order = np.argsort(-rpt, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    spt = rpt[rows, order]
    present = spt > 0
    sl = OBJECT_SLICES[kind]
    block = out[:, sl.start : sl.start + k]
    block[..., 0] = spt
    block[..., 1] = np.where(present, reta[rows, order], 0.0)
    block[..., 2] = np.where(present, rphi[rows, order], 0.0)
    block[..., 3] = np.where(present, TYPE_CODES[kind], 0)


def _detector(rng: np.random.Generator, ev: _Event) -> np.ndarray:
    """Smearing, acceptance, trigger filter, pileup and MET; return the passing events (m, 19, 4) float32."""
    # leptons first: the filter (>= 1 e or mu with pT > 23 GeV) decides which events go on
    lep = {k: _smear(rng, k, ev.objs[k]) for k in ("egamma", "muon") if ev.objs[k]}
    keep = np.zeros(ev.n, bool)
    for r in lep.values():
        keep |= (r[2] > 23.0).any(1)
    idx = np.flatnonzero(keep)
    m = len(idx)
    out = np.zeros((m, N_OBJECTS, N_COLUMNS), dtype=np.float32)
    lost = ev.nu[idx].astype(np.float32)
    ht = np.zeros(m, np.float32)
    for kind, r in lep.items():
        r = tuple(a[idx] for a in r)
        lost[:, 0] += r[0]
        lost[:, 1] += r[1]
        ht += r[2].sum(1)
        _fill(out, kind, *r[2:])
    npu = rng.poisson(1.2, m)
    jets = [tuple(a[idx] for a in p) for p in ev.objs["jet"]]
    for i in range(3):
        pt = 15.0 + rng.exponential(6.0, m)
        jets.append((np.where(npu > i, pt, 0.0), rng.uniform(-4.7, 4.7, m), rng.uniform(-np.pi, np.pi, m)))
    lx, ly, rpt, reta, rphi = _smear(rng, "jet", jets)
    lost[:, 0] += lx
    lost[:, 1] += ly
    ht += rpt.sum(1)
    _fill(out, "jet", rpt, reta, rphi)
    lost += (0.4 * np.sqrt(ht + 50.0))[:, None] * rng.standard_normal((m, 2), dtype=np.float32)
    out[:, 0, 0] = np.hypot(lost[:, 0], lost[:, 1])
    out[:, 0, 2] = np.arctan2(lost[:, 1], lost[:, 0])
    out[:, 0, 3] = 1
    return out


def _generate_process(rng: np.random.Generator, process: str, n: int) -> np.ndarray:
    """n filtered events of one process."""
    fn = _PROCESSES[process]
    got: list[np.ndarray] = []
    have, eff = 0, 0.5
    while have < n:
        m = max(int((n - have) / max(eff, 0.02) * 1.1) + 16, 64)
        ev = _detector(rng, fn(rng, m))
        eff = max(len(ev) / m, 0.02)
        got.append(ev[: n - have])
        have += len(got[-1])
    return np.concatenate(got) if got else np.zeros((0, N_OBJECTS, N_COLUMNS), np.float32)


def generate(
    n_events: int, sample: str = "background", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n_events`` filtered events of ``sample`` ('background' or a signal name).

    Returns ``(events, process_codes)``; events are (n, 19, 4) float32 in the ADC2021 layout.
    The same (n_events, sample, seed) always gives the same bytes.
    """
    if sample != "background" and sample not in SIGNALS:
        raise ValueError(f"unknown sample {sample!r}; choose 'background' or one of {', '.join(SIGNALS)}")
    blocks = list(_iter_blocks(n_events, sample, seed))
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _iter_blocks(n_events: int, sample: str, seed: int, threads: int = 2):
    """Yield (events, codes) blocks in order; blocks are generated on ``threads`` threads.

    Every block has its own child seed, so the bytes do not depend on the thread count.
    """
    ss = np.random.SeedSequence([seed, _sample_index(sample)])
    n_blocks = max(1, -(-n_events // _BLOCK))
    jobs = [
        (np.random.default_rng(child), sample, min(_BLOCK, n_events - b * _BLOCK))
        for b, child in zip(range(n_blocks), ss.spawn(n_blocks))
    ]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending = [pool.submit(_generate_block, *j) for j in jobs[:threads]]
        for i in range(len(jobs)):
            block = pending[i].result()
            pending[i] = None  # release memory of finished blocks
            if i + threads < len(jobs):
                pending.append(pool.submit(_generate_block, *jobs[i + threads]))
            yield block


def _sample_index(sample: str) -> int:
    return 0 if sample == "background" else 1 + SIGNALS.index(sample)


def _generate_block(rng: np.random.Generator, sample: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if sample == "background":
        names = list(BACKGROUND_FRACTIONS)
        counts = rng.multinomial(n, list(BACKGROUND_FRACTIONS.values()))
    else:
        names, counts = [sample], [n]
    evs = [_generate_process(rng, p, int(c)) for p, c in zip(names, counts) if c]
    codes = [np.full(int(c), PROCESS_CODES[p], np.int8) for p, c in zip(names, counts) if c]
    ev, code = np.concatenate(evs), np.concatenate(codes)
    perm = rng.permutation(len(ev))
    return ev[perm], code[perm]


def generate_file(
    path: str | os.PathLike,
    n_events: int,
    sample: str = "background",
    seed: int = 0,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Generate ``n_events`` of ``sample`` into an ADC2021-layout HDF5 file (atomic write).

    The file carries the optional per-event ``process`` codes and attributes naming the
    generator, sample and seed. ``progress`` is called with the number of events written so far.
    """
    from trigger_ml.core.artifacts import check_output

    check_output(path, [], STAGE, force, kind="file")  # replaces only an earlier generated file
    attrs = {"generator": GENERATOR_VERSION, "sample": sample, "seed": seed, "n_events": n_events}
    with EventsWriter(path, force=force, attrs=attrs, stage=STAGE) as w:
        for ev, code in _iter_blocks(n_events, sample, seed):
            w.append(ev, {"process": code})
            if progress:
                progress(w.n)
    return Path(path)
