"""Brian2 model text for each neuron kind and reset mode: equations, the per-step update, threshold, reset.

snnTorch neurons are discrete-time maps, so the state changes in one `run_regularly` update per
step instead of differential equations (an exact exponential integrator would recompute
beta = exp(-dt/tau) and differ from snnTorch's beta in the last bit). The update is written as a
chain of two-operand statements in the same order snnTorch evaluates them
(`snntorch/_neurons/{leaky,synaptic,rleaky}.py` 1.0): each statement rounds once, and Brian2's
code generator cannot re-associate a sum of three terms. `docs/brian2_mapping.md` has the full
derivation; `docs/neuron_semantics.md` the semantics.

Variables (all dimensionless):
  v      membrane potential U
  I      synaptic current (synaptic only)
  X      feed-forward input of this step, accumulated by the incoming synapses (`X_post += w`)
  Xrec   recurrent input of the previous step's spikes (rleaky only)
  R      reset signal: 1 if the neuron spiked at the previous step (set by Brian2's reset)
  beta, threshold, bias, alpha, rec_bias  per-neuron constants
"""

from __future__ import annotations

THRESHOLD = "v > threshold"  # strict: U == threshold does not spike
RESET = "R = 1"  # remembered for the next step's update (snnTorch's reset_delay=True)
FEEDFORWARD_ON_PRE = "X_post += w"
RECURRENT_ON_PRE = "Xrec_post += w"
SYNAPSE_MODEL = "w : 1 (constant)"

# Intermediate groups in front of a population (`plan.Stage`), recomputed every step; `y` is a
# stage's output, the value the next stage or population reads.
ANALOG_INPUT_MODEL = "y : 1"
ANALOG_INPUT_CODE = "y = input_values(t, i)"  # the TimedArray row of this Brian2 step
LINEAR_STAGE_MODEL = "s : 1\ny : 1\nb : 1 (constant)"  # s: synaptic sum, b: bias of the layers
STAGE_CLEAR_CODE = "s = 0"
STAGE_SPIKE_ON_PRE = "s_post += w"
STAGE_FINISH_CODE = "y = s + b"
OR_STAGE_MODEL = "y : 1"  # count of window elements that spiked this step
OR_CLEAR_CODE = "y = 0"
OR_ON_PRE = "y_post += 1"
OR_THRESHOLD = "y > 0"  # any element of the window spiked: the max of {0, 1} values


def summed_model(target: str) -> str:
    """Synapses from a real-valued source (`y`) summing `w * y_pre` into the target's `target`
    variable each step (Brian2 overwrites the target with the sum)."""
    return f"w : 1 (constant)\n{target}_post = w * y_pre : 1 (summed)"


def max_stage_model(k: int) -> str:
    """A max-pooling group of windows of k elements: m0 .. m{k-1} link to the source's `y`."""
    return "y : 1\n" + "".join(f"m{j} : 1 (linked)\n" for j in range(k))


def max_stage_code(k: int) -> str:
    """y = max(m0, ..., m{k-1}) as a chain of `clip(a, b, inf)` = max(a, b) (Brian2 has no max
    function; clip compares and returns one of its arguments, so the result is exact)."""
    lines = ["y = m0"] + [f"y = clip(m{j}, y, inf)" for j in range(1, k)]
    return "\n".join(lines)

_BASE_VARS = """
v : 1
X : 1
R : 1
beta : 1 (constant)
threshold : 1 (constant)
bias : 1 (constant)
"""

# Start of each sample: the state goes back to U[0] = I[0] = S[0] = 0 (samples run back to back
# in one Brian2 run; `keep` is 0 on the first step of every sample, 1 otherwise).
_KEEP = "keep = 1.0 * int(t_in_timesteps % num_steps != 0)"


def model_equations(kind: str) -> str:
    """The NeuronGroup model text of a neuron kind ("leaky", "synaptic", "rleaky")."""
    if kind == "leaky":
        return _BASE_VARS
    if kind == "synaptic":
        return _BASE_VARS + "I : 1\nalpha : 1 (constant)\n"
    if kind == "rleaky":
        return _BASE_VARS + "Xrec : 1\nrec_bias : 1 (constant)\n"
    raise ValueError(f"unknown neuron kind {kind!r}")


def update_code(kind: str, reset: str) -> str:
    """The run_regularly code of one step, executed after this step's input synapses and before
    the threshold. Reproduces (docs/neuron_semantics.md):

    leaky    subtract  U = (beta*U + Xin) - R*theta        zero  U = beta*((1-R)*U) + Xin
    synaptic I = alpha*I + Xin;  V = beta*U + I;  subtract U = V - R*theta;  zero U = V - R*V
    rleaky   V = (beta*U + Xin) + (Xrec + rec_bias);  subtract U = V - R*theta;  zero U = V - R*V
    with Xin = X + bias (the synaptic sum plus the bias of the layers in front)."""
    if reset not in ("subtract", "zero"):
        raise ValueError(f"unknown reset mode {reset!r}")
    lines = [_KEEP, "v = v * keep", "R = R * keep", "Xin = X + bias", "X = 0"]
    if kind == "leaky":
        if reset == "zero":
            lines += ["nR = 1 - R", "v = nR * v"]
        lines += ["dec = beta * v", "v = dec + Xin"]
        if reset == "subtract":
            lines += ["rst = R * threshold", "v = v - rst"]
    elif kind in ("synaptic", "rleaky"):
        if kind == "synaptic":
            lines += ["I = I * keep", "dI = alpha * I", "I = dI + Xin", "dec = beta * v", "vnew = dec + I"]
        else:
            lines += ["Xrec = Xrec * keep", "rec = Xrec + rec_bias", "Xrec = 0", "dec = beta * v",
                      "vff = dec + Xin", "vnew = vff + rec"]
        lines += ["rst = R * threshold" if reset == "subtract" else "rst = R * vnew", "v = vnew - rst"]
    else:
        raise ValueError(f"unknown neuron kind {kind!r}")
    lines.append("R = 0")
    return "\n".join(lines)
