"""Continual learning for spiking networks: HLOP (Hebbian orthogonal projection) and its baselines.

Modules: `subspace` (Oja's subspace rule, SVD memory, projections: pure math), `activity`
(presynaptic activity of weight layers via hooks), `streams` (Permuted-X / Split-X task streams),
`strategies` (finetune, EWC, GPM, HLOP, replay: hooks into one loop), `harness` (the loop, joint
multitask training, the accuracy matrix), `metrics` (ACC, BWT, forgetting).
"""

from .harness import (RESULT_FORMAT_VERSION, ContinualConfig, StrategyResult, encode_test_sets,
                      evaluate_task, initial_state, run_multitask, run_sequential, run_strategies)
from .metrics import average_accuracy, backward_transfer, forgetting, summarize
from .strategies import (DEFAULT_SET, MULTITASK, STRATEGIES, STRATEGY_NAMES, make_strategy,
                         paper_subspace_size)
from .streams import Task, TaskStream, make_stream, parse_benchmark, permuted_stream, split_stream

__all__ = [
    "RESULT_FORMAT_VERSION", "ContinualConfig", "StrategyResult", "encode_test_sets", "evaluate_task",
    "initial_state", "run_multitask", "run_sequential", "run_strategies", "average_accuracy",
    "backward_transfer", "forgetting", "summarize", "DEFAULT_SET", "MULTITASK", "STRATEGIES",
    "STRATEGY_NAMES", "make_strategy", "paper_subspace_size", "Task", "TaskStream", "make_stream",
    "parse_benchmark", "permuted_stream", "split_stream",
]
