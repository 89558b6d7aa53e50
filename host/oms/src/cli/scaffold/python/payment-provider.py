"""A payment provider adapter. Reach the provider only through
`outbound_http.send`, to origins in the tenant's `allowed_origins`.
Send `request.idempotency_key` to the provider: the host retries with it.
`retrieve` reads a payment back so the host can reconcile it."""

from typing import List, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.payment_status import ProviderPayment, RetrieveError_NotFound
from wit_world.exports.provider import Decline, PaymentError_Declined, PaymentRequest
from wit_world.imports import outbound_http  # noqa: F401  (the provider's way out)


def _not_yet(op: str) -> str:
    raise Err(PaymentError_Declined(Decline(code="NOT_IMPLEMENTED", message=f"{op} is not implemented yet")))


class Provider(exports.Provider):
    def authorize(self, request: PaymentRequest, settings: List[Tuple[str, str]]) -> str:
        return _not_yet("authorize")

    def capture(self, request: PaymentRequest, settings: List[Tuple[str, str]]) -> str:
        return _not_yet("capture")

    def void(self, request: PaymentRequest, settings: List[Tuple[str, str]]) -> str:
        return _not_yet("void")

    def refund(self, request: PaymentRequest, settings: List[Tuple[str, str]]) -> str:
        return _not_yet("refund")


class PaymentStatus(exports.PaymentStatus):
    def retrieve(self, provider_reference: str, settings: List[Tuple[str, str]]) -> ProviderPayment:
        raise Err(RetrieveError_NotFound(provider_reference))
