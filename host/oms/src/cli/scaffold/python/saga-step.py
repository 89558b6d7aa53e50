"""A saga step of the tenant's own, placed by naming it in the manifest's
`saga.steps` and configured in its `[steps.<name>]` section. Its state
(`step_state`) is the tenant's and this step's alone; what a call writes is
committed with the saga's transition, and only if the call succeeds."""

from typing import List, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.custom_step import StepContext, StepError
from wit_world.imports import step_state
from wit_world.imports.types import Order


def _state_error(e: Err) -> Err:
    transient = isinstance(e.value, step_state.StateError_Unavailable)
    return Err(StepError(code="STATE_ERROR", message=repr(e.value), transient=transient))


class CustomStep(exports.CustomStep):
    def run(self, order: Order, context: StepContext, settings: List[Tuple[str, str]]) -> str:
        # Counts the customer's orders; the output goes to `compensate`.
        try:
            return str(step_state.increment(f"orders:{order.customer_id}", 1))
        except Err as e:
            raise _state_error(e)

    def compensate(self, order: Order, context: StepContext, output: str, settings: List[Tuple[str, str]]) -> None:
        try:
            step_state.increment(f"orders:{order.customer_id}", -1)
        except Err as e:
            raise _state_error(e)
