"""Issue 7: schemathesis generates requests from the OpenAPI schema for every operation; none may
end in a server error (as a QA user with an API token, and without one)."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.factories import PASSWORD


def test_the_api_answers_generated_requests_without_a_server_error(web_app) -> None:
    token = (
        TestClient(web_app)
        .post("/api/v1/tokens", json={"username": "qa1", "password": PASSWORD})
        .json()["token"]
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", web_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])
            case.call_and_validate(checks=[not_a_server_error])  # anonymous: 401 or 422, never 500

        run()


def test_ids_beyond_an_integer_column_answer_422_not_500(web_app) -> None:
    """Found by the test above on PostgreSQL, whose integer ids are 32-bit: an id past 2³¹−1
    reached the database and failed there (SQLite's 64-bit integers had hidden it)."""
    from tests.web_helpers import browser

    client = TestClient(web_app)
    token = client.post("/api/v1/tokens", json={"username": "qa1", "password": PASSWORD}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    for excursion_id, status in ((2**31, 422), (2**31 - 1, 404)):
        r = client.post(f"/api/v1/excursions/{excursion_id}/acknowledge", json={"comment": "x"}, headers=auth)
        assert r.status_code == status, r.text
    r = client.post(
        "/api/v1/deviations",
        headers=auth,
        json={
            "excursion_ids": [2**31],
            "title": "t",
            "classification": "minor",
            "category": "c",
            "description": "d",
        },
    )
    assert r.status_code == 422, r.text
    page, csrf = browser(web_app, "qa1")
    r = page.post(f"/excursions/{2**31}/acknowledge", data={"comment": "x", "csrf_token": csrf})
    assert r.status_code == 303, r.text[:300]  # a form refused: back with a message, no 500


def test_every_json_response_of_every_api_route_has_a_schema(web_app) -> None:
    """Typed API documents: each 2xx JSON answer of each ``/api/v1`` route is described in
    ``/openapi.json`` by a schema with its fields (not ``{}``, not a bare object), so a client
    reads the fields from the schema instead of from the code."""
    from tracker.web.access import ACCESS

    doc = TestClient(web_app).get("/openapi.json").json()
    components = doc["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        while "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    described, bare = set(), []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            route = f"{method.upper()} {path}"
            answers = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
            assert answers, f"{route}: no success response"
            for code, answer in answers.items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                body = resolve(schema)
                if body.get("type") == "array":
                    body = resolve(body.get("items", {}))
                if not body.get("properties"):
                    bare.append(f"{route} {code}: {schema}")
            described.add(route)
    assert bare == []
    api_routes = {key for key in ACCESS if key.split(" ", 1)[1].startswith("/api/")}
    assert len(api_routes) >= 33
    assert sorted(api_routes - described) == []  # every API route is in the document
