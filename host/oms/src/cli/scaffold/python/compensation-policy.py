"""What to do when a saga step fails: retry, or undo what was done.
The host checks the plan: it must undo exactly what holds money or stock."""

from typing import List, Tuple

from wit_world import exports
from wit_world.exports.policy import (
    Compensation,
    Decision_Compensate,
    Decision_Retry,
    Failure,
    Plan,
    SagaView,
    Step,
)


class Policy(exports.Policy):
    def decide(self, failure: Failure, saga: SagaView, settings: List[Tuple[str, str]]) -> Plan:
        if failure.transient and failure.attempt < 3:
            return Plan(decision=Decision_Retry(200 << failure.attempt), actions=[], notify=[], reason=failure.code)
        captured = Step.CAPTURE_PAYMENT in saga.completed
        actions = []
        for step in reversed(saga.completed):
            if step == Step.CAPTURE_PAYMENT:
                actions.append(Compensation.REFUND_PAYMENT)
            elif step == Step.AUTHORIZE_PAYMENT and not captured:
                actions.append(Compensation.VOID_PAYMENT)
            elif step == Step.RESERVE_INVENTORY:
                actions.append(Compensation.RELEASE_INVENTORY)
        return Plan(decision=Decision_Compensate(), actions=actions, notify=["customer"], reason=failure.code)
