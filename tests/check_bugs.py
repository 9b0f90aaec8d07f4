"""Correct user optimizers (Adam, heavy-ball SGD, AdamW, torch.optim semantics) and subtle bugs in them.

Each bug is (name, file, old, new): the source with ``old`` replaced by ``new``. Shared by the bug-matrix
tests (tests/test_check_bugs.py) and benchmarks/bench_check_reproducibility.py. Every bug here must fail
``optbench check`` on problems/ci.toml, in exact and statistical mode.
"""

from __future__ import annotations

ADAM = '''
import torch


class MyAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay, AMSGrad and maximize, as torch.optim.Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad  # MAXIMIZE
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])  # DECAY
                st = self.state[p]
                if not st:  # INIT
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                    if group["amsgrad"]:
                        st["v_max"] = torch.zeros_like(p)
                st["t"] += 1
                t = st["t"]
                st["m"].mul_(b1).add_(g, alpha=1 - b1)  # M
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)  # V
                if group["amsgrad"]:
                    torch.maximum(st["v_max"], st["v"], out=st["v_max"])  # AMSGRAD
                    v = st["v_max"]
                else:
                    v = st["v"]
                m_hat = st["m"] / (1 - b1 ** t)  # BIAS-M
                v_hat = v / (1 - b2 ** t)  # BIAS-V
                denom = v_hat.sqrt().add_(group["eps"])  # DENOM
                p.addcdiv_(m_hat, denom, value=-group["lr"])  # UPDATE
'''

SGD = '''
import torch


class MySGD(torch.optim.Optimizer):
    """SGD with heavy-ball or Nesterov momentum, dampening, L2 weight decay and maximize (torch.optim.SGD)."""

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad  # MAXIMIZE
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])  # DECAY
                if mu != 0:
                    st = self.state[p]
                    if "buf" not in st:
                        st["buf"] = g.clone()  # INIT
                    else:
                        st["buf"].mul_(mu).add_(g, alpha=1 - group["dampening"])  # BUF
                    if group["nesterov"]:
                        g = g.add(st["buf"], alpha=mu)  # NESTEROV
                    else:
                        g = st["buf"]
                p.add_(g, alpha=-group["lr"])  # UPDATE
'''

ADAMW = '''
import torch


class MyAdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter 2019): x <- x (1 - lr wd), then the Adam step (torch.optim.AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                p.mul_(1 - group["lr"] * group["weight_decay"])  # DECAY
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                    if group["amsgrad"]:
                        st["v_max"] = torch.zeros_like(p)
                st["t"] += 1
                t = st["t"]
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                if group["amsgrad"]:
                    torch.maximum(st["v_max"], st["v"], out=st["v_max"])  # AMSGRAD
                    v = st["v_max"]
                else:
                    v = st["v"]
                m_hat = st["m"] / (1 - b1 ** t)
                v_hat = v / (1 - b2 ** t)
                denom = v_hat.sqrt().add_(group["eps"])  # DENOM
                p.addcdiv_(m_hat, denom, value=-group["lr"])  # UPDATE
'''

SOURCES = {"adam.py": ADAM, "sgd.py": SGD, "adamw.py": ADAMW}
CLASSES = {"adam.py": "MyAdam", "sgd.py": "MySGD", "adamw.py": "MyAdamW"}

_F32 = "p.add_((-group[\"lr\"] * m_hat / denom).float().to(p.dtype))  # UPDATE"
BUGS = [
    # ---- Adam ----
    ("adam: update computed in float32", "adam.py",
     'p.addcdiv_(m_hat, denom, value=-group["lr"])  # UPDATE', _F32),
    ("adam: eps inside the sqrt", "adam.py",
     'denom = v_hat.sqrt().add_(group["eps"])', 'denom = v_hat.add(group["eps"]).sqrt()'),
    ("adam: first-moment bias correction one step ahead (t + 1)", "adam.py",
     'st["m"] / (1 - b1 ** t)', 'st["m"] / (1 - b1 ** (t + 1))'),
    ("adam: second-moment bias correction missing", "adam.py", "v / (1 - b2 ** t)", "v"),
    ("adam: eps scaled by the bias correction (eps-hat)", "adam.py",
     'v_hat = v / (1 - b2 ** t)  # BIAS-V\n                denom = v_hat.sqrt().add_(group["eps"])',
     'denom = (v.sqrt() + group["eps"]) / (1 - b2 ** t) ** 0.5'),
    ("adam: AMSGrad keeps the max of g² instead of v", "adam.py",
     'torch.maximum(st["v_max"], st["v"], out=st["v_max"])', 'torch.maximum(st["v_max"], g * g, out=st["v_max"])'),
    ("adam: AMSGrad ignored", "adam.py", 'v = st["v_max"]', 'v = st["v"]'),
    ("adam: weight decay decoupled instead of L2", "adam.py",
     'g = g.add(p, alpha=group["weight_decay"])  # DECAY',
     'p.mul_(1 - group["lr"] * group["weight_decay"])  # DECAY'),
    ("adam: weight decay added to the first moment twice", "adam.py",
     'st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)  # V',
     'st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)  # V\n'
     '                st["m"].add_(p, alpha=group["weight_decay"] * (1 - b1))'),
    ("adam: maximize ignored", "adam.py", 'g = -p.grad if group["maximize"] else p.grad',
     "g = p.grad.clone()"),
    ("adam: gradient scaled by 1 + 1e-6", "adam.py", 'g = -p.grad if group["maximize"] else p.grad',
     'g = (-p.grad if group["maximize"] else p.grad) * (1 + 1e-6)'),
    ("adam: state reset every 100 steps", "adam.py", "if not st:  # INIT", 'if not st or st["t"] % 100 == 0:'),
    ("adam: v clamped below at 1e-12", "adam.py", "v_hat = v / (1 - b2 ** t)",
     "v_hat = (v / (1 - b2 ** t)).clamp(min=1e-12)"),
    # ---- SGD ----
    ("sgd: update computed in float32", "sgd.py", 'p.add_(g, alpha=-group["lr"])',
     'p.add_((-group["lr"] * g).float().to(p.dtype))'),
    ("sgd: dampening ignored", "sgd.py", 'alpha=1 - group["dampening"]', "alpha=1"),
    ("sgd: dampening applied to the first step too", "sgd.py", 'st["buf"] = g.clone()',
     'st["buf"] = g.mul(1 - group["dampening"])'),
    ("sgd: Nesterov lookahead with mu on the wrong term", "sgd.py", 'g = g.add(st["buf"], alpha=mu)',
     'g = st["buf"].add(g, alpha=mu)'),
    ("sgd: Nesterov ignored", "sgd.py", 'if group["nesterov"]:', "if False:"),
    ("sgd: weight decay applied to the step outside the momentum", "sgd.py",
     'g = g.add(p, alpha=group["weight_decay"])  # DECAY',
     'p.add_(p, alpha=-group["lr"] * group["weight_decay"])  # DECAY'),
    ("sgd: step scaled by 1 + 1e-3 mu", "sgd.py", 'p.add_(g, alpha=-group["lr"])  # UPDATE',
     'p.add_(g.mul(1 + 1e-3 * mu), alpha=-group["lr"])  # UPDATE'),
    ("sgd: maximize ignored", "sgd.py", 'g = -p.grad if group["maximize"] else p.grad',
     "g = p.grad.clone()"),
    ("sgd: gradient scaled by 1 + 1e-6", "sgd.py", 'g = -p.grad if group["maximize"] else p.grad',
     'g = (-p.grad if group["maximize"] else p.grad) * (1 + 1e-6)'),
    ("sgd: momentum buffer reset every 100 steps", "sgd.py", 'if "buf" not in st:',
     'st["n"] = st.get("n", 0) + 1\n                    if "buf" not in st or st["n"] % 100 == 0:'),
    # ---- AdamW ----
    ("adamw: decay applied after the update", "adamw.py",
     'p.mul_(1 - group["lr"] * group["weight_decay"])  # DECAY', 'pass  # DECAY'),
    ("adamw: lr applied twice to the decay", "adamw.py", 'p.mul_(1 - group["lr"] * group["weight_decay"])',
     'p.mul_(1 - group["lr"] ** 2 * group["weight_decay"])'),
    ("adamw: coupled (L2) decay instead of decoupled", "adamw.py",
     'g = p.grad\n                p.mul_(1 - group["lr"] * group["weight_decay"])  # DECAY',
     'g = p.grad.add(p, alpha=group["weight_decay"])'),
    ("adamw: eps inside the sqrt", "adamw.py", 'denom = v_hat.sqrt().add_(group["eps"])',
     'denom = v_hat.add(group["eps"]).sqrt()'),
    ("adamw: AMSGrad max of the bias-corrected v", "adamw.py",
     'torch.maximum(st["v_max"], st["v"], out=st["v_max"])',
     'torch.maximum(st["v_max"], st["v"] / (1 - b2 ** t), out=st["v_max"])'),
]
# "decay applied after the update" also needs the decay after the step:
BUGS = [(n, f, o, nw) if n != "adamw: decay applied after the update" else
        (n, f, o, nw, 'p.addcdiv_(m_hat, denom, value=-group["lr"])  # UPDATE',
         'p.addcdiv_(m_hat, denom, value=-group["lr"])  # UPDATE\n'
         '                p.mul_(1 - group["lr"] * group["weight_decay"])')
        for n, f, o, nw in BUGS]


def bugged_source(bug: tuple) -> str:
    """The source of ``bug``'s file with its replacements applied (each must match exactly once)."""
    _, file, *pairs = bug
    source = SOURCES[file]
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert source.count(old) == 1, (bug[0], old)
        source = source.replace(old, new)
    return source
