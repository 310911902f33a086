"""Issue 7: schemathesis generates requests from the OpenAPI schema for every operation; none may
end in a server error (as a QA user with an API token, and without one)."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.factories import PASSWORD


def test_the_api_answers_generated_requests_without_a_server_error(web_app) -> None:
    token = TestClient(web_app).post("/api/v1/tokens",
                                     json={"username": "qa1", "password": PASSWORD}).json()["token"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", web_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])
            case.call_and_validate(checks=[not_a_server_error])   # anonymous: 401 or 422, never 500

        run()
