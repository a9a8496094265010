"""The ARM template engine of the local management endpoint: pure, no HTTP, no emulator."""

from __future__ import annotations

import copy
import uuid
from contextlib import contextmanager

import pytest

from provisioner import templates
from provisioner.errors import CdpError
from provisioner.localcloud.context import TemplateContext
from provisioner.localcloud.engine import (
    DeploymentScope,
    ResolvedResource,
    TemplateError,
    deploy,
    plan,
)
from provisioner.localcloud.expressions import parse
from provisioner.localcloud.unique import compute_hash, unique_string
from provisioner.site import Site

SUB = "00000000-0000-0000-0000-000000000001"
GROUP = DeploymentScope(SUB, "tenant-1", "westeurope", "deploy-1", "rg-1", {"env": "test"})
SUBSCRIPTION = DeploymentScope(SUB, "tenant-1", "westeurope", "deploy-1")
RG_ID = f"/subscriptions/{SUB}/resourceGroups/rg-1"


class RecordingProvider:
    """Materialises resources in memory, the way the endpoint's provider answers."""

    def __init__(self, existing: dict[str, dict] | None = None):
        self.states: dict[str, dict] = {k.lower(): v for k, v in (existing or {}).items()}
        self.put_order: list[str] = []
        self.keys_asked: list[tuple[str, str]] = []

    def put(self, resource: ResolvedResource) -> dict:
        properties = copy.deepcopy(resource.properties)
        properties["provisioningState"] = "Succeeded"
        if resource.type == "Microsoft.Storage/storageAccounts":
            properties["primaryEndpoints"] = {"blob": f"https://127.0.0.1:10000/{resource.name}/"}
        if resource.type == "Microsoft.Web/sites":
            properties["defaultHostName"] = f"{resource.name}.azurewebsites.net"
        state = {"id": resource.id, "name": resource.name, "type": resource.type, **resource.body}
        state["properties"] = properties
        if "SystemAssigned" in str((resource.body.get("identity") or {}).get("type", "")):
            state["identity"] = {**resource.body["identity"], "principalId": f"principal-of-{resource.name}"}
        self.states[resource.id.lower()] = state
        self.put_order.append(resource.name)
        return state

    def get(self, resource_id: str) -> dict | None:
        return self.states.get(resource_id.lower())

    def list_keys(self, resource_id: str, api_version: str) -> dict | None:
        self.keys_asked.append((resource_id, api_version))
        if resource_id.lower() not in self.states:
            return None
        return {"keys": [{"keyName": "key1", "value": "local-key-1", "permissions": "FULL"}]}


def evaluate(text, template=None, parameters=None, scope=GROUP):
    context = TemplateContext(template or {}, parameters, scope)
    return context.value(text, "test")


@contextmanager
def fails(code: str, *fragments: str):
    """Expect a TemplateError with ``code`` whose message contains every fragment."""
    with pytest.raises(TemplateError) as info:
        yield info
    assert info.value.code == code, info.value.message
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain text", "plain text"),
        ("[[not an expression]", "[not an expression]"),
        ("[[concat('a')]", "[concat('a')]"),
        ("['it''s']", "it's"),
        ("['']", ""),
        ("[42]", 42),
        ("[-7]", -7),
        ("[ concat( 'a' , 'b' ) ]", "ab"),
        ("[CONCAT('a', toUPPER('b'))]", "aB"),
        ("[concat('x', concat('y', concat('z')))]", "xyz"),
        ("[json('{\"a\": {\"b\": [10, 20]}}').a.b[1]]", 20),
        ("[json('{\"a\": {\"b\": [10, 20]}}')['a']['b'][0]]", 10),
        ("[json('{\"Key\": 1}').key]", 1),
        ("[createArray(1, 2, 3)[add(1, 1)]]", 3),
        ("[true()]", True),
        ("[null()]", None),
        ("a [b] c", "a [b] c"),
    ],
)
def test_expression_values(text, expected):
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[concat('a']", "expected ',' or ')'"),
        ("[concat('a)]", "unterminated string literal"),
        ("[true]", "'true' at position 0 is not a function call"),
        ("[]", "empty expression"),
        ("[concat('a') extra()]", "expected the end of the expression"),
        ("[concat('a').]", "expected a property name"),
        ("[concat('a'), 'b']", "expected the end of the expression"),
        ("[1.5]", "decimal number 1.5 at position 0: only integers are supported"),
        ("[concat(#)]", "unexpected character '#'"),
    ],
)
def test_parse_errors_name_the_expression_and_the_problem(text, problem):
    with fails("InvalidTemplate", problem, text):
        evaluate(text)


def test_parse_tree_is_plain_data():
    tree = parse("reference(variables('id')).primaryEndpoints.blob")
    assert tree.name == "blob"
    assert tree.target.target.name == "reference"


def test_unknown_function_is_named_with_its_expression():
    with fails("InvalidTemplate", "unknown function 'foo'", "[concat(foo(1))]"):
        evaluate("[concat(foo(1))]")


def test_errors_are_cdp_errors():
    with pytest.raises(CdpError):
        evaluate("[foo()]")


def test_wrong_argument_count_names_the_function():
    with fails("InvalidTemplate", "function 'substring' takes 2 to 3 argument(s), got 1"):
        evaluate("[substring('abc')]")


def test_property_errors_name_the_property_and_what_exists():
    with fails("InvalidTemplate", "property 'blob2' does not exist (available: blob, queue)"):
        evaluate("[json('{\"blob\": 1, \"queue\": 2}').blob2]")
    with fails("InvalidTemplate", "index 5 is out of range"):
        evaluate("[createArray(1)[5]]")


def test_if_evaluates_only_the_branch_taken():
    assert evaluate("[if(true(), 'yes', foo())]") == "yes"
    assert evaluate("[if(equals(1, 2), variables('missing'), 'no')]") == "no"
    with fails("InvalidTemplate", "the condition of 'if' must be a bool"):
        evaluate("[if('true', 1, 2)]")


# --- functions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[concat('a', 'b', 'c')]", "abc"),
        ("[concat('n', 1, true())]", "n1True"),
        ("[concat(createArray(1, 2), createArray(3))]", [1, 2, 3]),
        ("[format('{0}-{1}', 'a', 2)]", "a-2"),
        ("[format('{{{0}}}', 'x')]", "{x}"),
        ("[format('{1}{0}{1}', 'a', 'b')]", "bab"),
        ("[format('[{0,4}|{0,-4}]', 'ab')]", "[  ab|ab  ]"),
        ("[toLower('MiXeD')]", "mixed"),
        ("[toUpper('MiXeD')]", "MIXED"),
        ("[trim('  x y  ')]", "x y"),
        ("[substring('abcdef', 2)]", "cdef"),
        ("[substring('abcdef', 1, 3)]", "bcd"),
        ("[replace('a-b-c', '-', '')]", "abc"),
        ("[split('a,b;c', createArray(',', ';'))]", ["a", "b", "c"]),
        ("[split('a.b', '.')]", ["a", "b"]),
        ("[startsWith('Microsoft.Web', 'microsoft')]", True),
        ("[endsWith('abc', 'BC')]", True),
        ("[indexOf('abcb', 'B')]", 1),
        ("[padLeft('7', 3, '0')]", "007"),
        ("[string(123)]", "123"),
        ("[string(true())]", "True"),
        ("[string(json('{\"a\": [1, \"x\"]}'))]", '{"a":[1,"x"]}'),
        ("[int('42')]", 42),
        ("[bool('TRUE')]", True),
        ("[bool(0)]", False),
        ("[json('null')]", None),
        ("[base64('one, two, three')]", "b25lLCB0d28sIHRocmVl"),
        ("[equals('a', 'a')]", True),
        ("[equals(1, true())]", False),
        ("[equals(createArray(1, 'a'), createArray(1, 'a'))]", True),
        ("[not(equals(1, 2))]", True),
        ("[and(true(), true(), false())]", False),
        ("[or(false(), true())]", True),
        ("[greater(3, 2)]", True),
        ("[lessOrEquals('a', 'b')]", True),
        ("[empty('')]", True),
        ("[empty(createArray())]", True),
        ("[empty(json('{}'))]", True),
        ("[empty(null())]", True),
        ("[empty('x')]", False),
        ("[length('abcd')]", 4),
        ("[length(createArray(1, 2))]", 2),
        ("[length(json('{\"a\": 1}'))]", 1),
        ("[contains('abc', 'b')]", True),
        ("[contains('abc', 'B')]", False),
        ("[contains(createArray(1, 2), 2)]", True),
        ("[contains(json('{\"Key\": 1}'), 'key')]", True),
        ("[createObject('a', 1, 'b', createArray('x'))]", {"a": 1, "b": ["x"]}),
        ("[createArray()]", []),
        ("[union(json('{\"a\": 1, \"n\": {\"x\": 1}}'), json('{\"b\": 2, \"n\": {\"y\": 2}}'))]",
         {"a": 1, "n": {"x": 1, "y": 2}, "b": 2}),
        ("[union(json('{\"a\": 1}'), json('{\"a\": 2}'))]", {"a": 2}),
        ("[union(createArray(1, 2), createArray(2, 3))]", [1, 2, 3]),
        ("[first(createArray('a', 'b'))]", "a"),
        ("[last('xyz')]", "z"),
        ("[first(createArray())]", None),
        ("[coalesce(null(), null(), 'c', 'd')]", "c"),
        ("[coalesce(null())]", None),
        ("[add(2, mul(3, 4))]", 14),
        ("[div(-7, 2)]", -3),
        ("[mod(7, 3)]", 1),
        ("[range(2, 3)]", [2, 3, 4]),
        ("[max(createArray(1, 5, 3))]", 5),
        ("[min(4, 2)]", 2),
    ],
)
def test_functions(text, expected):
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[toLower(1)]", "function 'toLower' expects a string, got an integer"),
        ("[substring('abc', 2, 5)]", "out of range"),
        ("[format('{0:D}', 1)]", "format specifier ':D'"),
        ("[format('{1}', 'a')]", "has no argument"),
        ("[format('{0', 'a')]", "unmatched '{'"),
        ("[concat('a', createArray(1))]", "either strings or arrays"),
        ("[union(createArray(1), json('{}'))]", "either objects or arrays"),
        ("[json('{bad')]", "not JSON"),
        ("[int('4x2')]", "not an integer"),
        ("[createObject('a')]", "pairs"),
        ("[not('true')]", "expects a bool"),
        ("[div(1, 0)]", "divides by zero"),
        ("[uniqueString(1)]", "expects a string"),
    ],
)
def test_function_errors(text, problem):
    with fails("InvalidTemplate", problem):
        evaluate(text)


# Outputs of Microsoft's own implementation (Azure.Deployments.Expression, or ARM itself):
UNIQUE_STRING_VECTORS = [
    # takekazuomi/arm-uniquestring README.md: `./out/uniqueString test` -> rbgf3xv4ufgzg,
    # a wrapper around the Azure.Deployments.Expression NuGet package.
    (("test",), "rbgf3xv4ufgzg"),
    # Stack Overflow question 43295720 ("Azure ARM uniqueString function mimic"), the answer
    # that calls ExpressionBuiltInFunctions.Functions.EvaluateFunction("uniqueString", ...):
    # "zcztcwvu6iyg6" for "tyeth".
    (("tyeth",), "zcztcwvu6iyg6"),
    # JasonWhall/go-azure-uniquestring README: uniqueString('hello', 'world') joins to
    # "hello-world", hashes to 571013382255652050 and encodes to a7wkljktk6wne.
    (("hello", "world"), "a7wkljktk6wne"),
    # DevOps Shield: a unit test of uniqueString(resourceGroup().id), and the name of a real
    # deployed workspace in devopsshield/devops-shield (log-devopsshield-ek010devfd63l2gacbtca).
    (("/subscriptions/3c7f956b-55ee-4686-9d30-da1eb631dc59/resourceGroups/rg-devopsshieldek010dev",),
     "fd63l2gacbtca"),
]


@pytest.mark.parametrize("values, expected", UNIQUE_STRING_VECTORS)
def test_unique_string_matches_azure(values, expected):
    assert unique_string(*values) == expected
    arguments = ", ".join(f"'{v}'" for v in values)
    assert evaluate(f"[uniqueString({arguments})]") == expected


def test_unique_string_hash_matches_the_published_intermediate_value():
    # JasonWhall/go-azure-uniquestring README: "hello-world" hashes to 571013382255652050.
    assert compute_hash(b"hello-world") == 571013382255652050


def test_unique_string_covers_every_tail_length():
    values = {unique_string("x" * n) for n in range(20)}
    assert len(values) == 20
    assert all(len(v) == 13 and set(v) <= set("abcdefghijklmnopqrstuvwxyz234567") for v in values)


def test_guid_is_a_name_based_uuid_of_its_arguments():
    first = evaluate("[guid('a', 'b')]")
    parsed = uuid.UUID(first)
    assert parsed.version == 5 and parsed.variant == uuid.RFC_4122
    assert evaluate("[guid('a', 'b')]") == first
    assert evaluate("[guid('a', 'c')]") != first


# --- scope functions -----------------------------------------------------------------------------


def test_resource_group_subscription_and_deployment():
    assert evaluate("[resourceGroup()]") == {
        "id": RG_ID,
        "name": "rg-1",
        "type": "Microsoft.Resources/resourceGroups",
        "location": "westeurope",
        "tags": {"env": "test"},
        "properties": {"provisioningState": "Succeeded"},
    }
    assert evaluate("[subscription().subscriptionId]") == SUB
    assert evaluate("[subscription().tenantId]") == "tenant-1"
    assert evaluate("[subscription().id]") == f"/subscriptions/{SUB}"
    template = {"contentVersion": "1.2.3.4", "resources": []}
    assert evaluate("[deployment().name]", template) == "deploy-1"
    assert evaluate("[deployment().properties.template.contentVersion]", template) == "1.2.3.4"
    assert evaluate("[deployment().location]", template, scope=SUBSCRIPTION) == "westeurope"


def test_resource_group_is_not_available_at_subscription_scope():
    with fails("InvalidTemplate", "resourceGroup() is not available in a subscription-scope deployment"):
        evaluate("[resourceGroup().location]", scope=SUBSCRIPTION)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[resourceId('Microsoft.Storage/storageAccounts', 'st1')]",
         f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/st1"),
        ("[resourceId('other-rg', 'Microsoft.Storage/storageAccounts', 'st1')]",
         f"/subscriptions/{SUB}/resourceGroups/other-rg/providers/Microsoft.Storage/storageAccounts/st1"),
        ("[resourceId('sub-2', 'rg-2', 'Microsoft.Web/sites', 'app')]",
         "/subscriptions/sub-2/resourceGroups/rg-2/providers/Microsoft.Web/sites/app"),
        ("[resourceId('Microsoft.Web/sites/config', 'app', 'web')]",
         f"{RG_ID}/providers/Microsoft.Web/sites/app/config/web"),
        ("[resourceId('Microsoft.Web/sites/config', 'app/web')]",
         f"{RG_ID}/providers/Microsoft.Web/sites/app/config/web"),
        ("[subscriptionResourceId('Microsoft.Resources/resourceGroups', 'rg-9')]",
         f"/subscriptions/{SUB}/resourceGroups/rg-9"),
        ("[subscriptionResourceId('sub-2', 'Microsoft.Authorization/roleDefinitions', 'r1')]",
         "/subscriptions/sub-2/providers/Microsoft.Authorization/roleDefinitions/r1"),
        ("[tenantResourceId('Microsoft.Management/managementGroups', 'mg')]",
         "/providers/Microsoft.Management/managementGroups/mg"),
    ],
)
def test_resource_ids(text, expected):
    assert evaluate(text) == expected


def test_resource_id_at_subscription_scope_is_subscription_level():
    assert evaluate("[resourceId('Microsoft.Resources/resourceGroups', 'rg-9')]", scope=SUBSCRIPTION) == (
        f"/subscriptions/{SUB}/resourceGroups/rg-9"
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[resourceId('Microsoft.Web/sites/config', 'app')]", "needs 2 name segment(s), got 1"),
        ("[resourceId('st1', 'Microsoft.Storage/storageAccounts')]", "but no name"),
        ("[resourceId('a', 'b', 'c', 'Microsoft.Web/sites', 'x')]", "needs a resource type"),
    ],
)
def test_resource_id_errors(text, problem):
    with fails("InvalidTemplate", problem):
        evaluate(text)


# --- parameters and variables ----------------------------------------------------------------------

PARAMETERS = {
    "name": {"type": "string", "minLength": 3, "maxLength": 8},
    "count": {"type": "int", "defaultValue": 2, "minValue": 1, "maxValue": 30},
    "sku": {"type": "string", "defaultValue": "Standard_LRS", "allowedValues": ["Standard_LRS", "Premium_LRS"]},
    "zones": {"type": "array", "defaultValue": [], "allowedValues": ["1", "2", "3"]},
    "enabled": {"type": "bool", "defaultValue": True},
    "tags": {"type": "object", "defaultValue": {}},
    "secret": {"type": "secureString", "defaultValue": "[concat('s3', 'cret')]"},
    "location": {"type": "string", "defaultValue": "[resourceGroup().location]"},
    "label": {"type": "string", "defaultValue": "[toUpper(parameters('name'))]"},
}


def resolved(values):
    context = TemplateContext({"parameters": PARAMETERS}, values, GROUP)
    return context.resolve_parameters()


def test_parameters_take_file_shape_plain_values_and_defaults():
    values = resolved({"name": {"value": "abc"}, "count": 5, "zones": {"value": ["1", "3"]}})
    assert values["name"] == "abc" and values["count"] == 5 and values["zones"] == ["1", "3"]
    assert values["sku"] == "Standard_LRS" and values["enabled"] is True
    assert values["secret"] == "s3cret"
    assert values["location"] == "westeurope"
    assert values["label"] == "ABC"


def test_parameter_names_are_case_insensitive():
    context = TemplateContext({"parameters": PARAMETERS}, {"NAME": "abc"}, GROUP)
    assert context.value("[parameters('Name')]", "test") == "abc"


@pytest.mark.parametrize(
    "values, problem",
    [
        ({}, "no value is given for the template parameter(s) 'name'"),
        ({"name": "abc", "colour": "red"}, "the template has no parameter(s) 'colour'"),
        ({"name": 7}, "parameter 'name' must be of type string, got an integer"),
        ({"name": "abc", "count": "5"}, "parameter 'count' must be of type int, got a string"),
        ({"name": "abc", "count": True}, "parameter 'count' must be of type int, got a bool"),
        ({"name": "abc", "enabled": 1}, "parameter 'enabled' must be of type bool"),
        ({"name": "abc", "tags": []}, "parameter 'tags' must be of type object, got an array"),
        ({"name": "abc", "sku": "Standard_GRS"}, "parameter 'sku' value 'Standard_GRS' is not allowed"),
        ({"name": "abc", "zones": ["1", "4"]}, "parameter 'zones' value ['1', '4'] is not allowed"),
        ({"name": "abc", "count": 0}, "parameter 'count' value 0 is less than the minimum 1"),
        ({"name": "abc", "count": 31}, "greater than the maximum 30"),
        ({"name": "ab"}, "parameter 'name' is 2 long, shorter than the minimum length 3"),
        ({"name": "abcdefghi"}, "longer than the maximum length 8"),
    ],
)
def test_parameter_validation(values, problem):
    with fails("InvalidTemplateDeployment", problem):
        resolved(values)


def test_secure_parameter_values_stay_out_of_errors():
    template = {"parameters": {"key": {"type": "secureString", "allowedValues": ["a"], "minLength": 1}}}
    with fails("InvalidTemplateDeployment", "parameter 'key'") as info:
        TemplateContext(template, {"key": "hunter2-secret"}, GROUP).resolve_parameters()
    assert "hunter2" not in info.value.message


def test_bad_parameter_declarations_are_template_errors():
    with fails("InvalidTemplate", "parameter 'p' has type 'text'"):
        TemplateContext({"parameters": {"p": {"type": "text"}}}, {"p": "x"}, GROUP).resolve_parameters()


def test_variables_are_lazy_and_may_use_each_other():
    template = {
        "parameters": {"prefix": {"type": "string"}},
        "variables": {
            "full": "[concat(variables('base'), '-', variables('suffix'))]",
            "base": "[toLower(parameters('prefix'))]",
            "suffix": "[uniqueString(resourceGroup().id)]",
            "nested": {"list": ["[variables('base')]", 1], "literal": "[[x]"},
            "broken": "[foo()]",
        },
    }
    context = TemplateContext(template, {"prefix": "CDP"}, GROUP)
    assert context.value("[variables('full')]", "t") == f"cdp-{unique_string(RG_ID)}"
    assert context.value("[variables('nested')]", "t") == {"list": ["cdp", 1], "literal": "[x]"}


def test_variable_cycles_and_unknown_names_are_named():
    template = {"variables": {"a": "[variables('b')]", "b": "[concat(variables('a'))]"}}
    with fails("InvalidTemplate", "circular reference: variables('a') -> variables('b') -> variables('a')"):
        evaluate("[variables('a')]", template)
    with fails("InvalidTemplate", "the template has no variable 'c'"):
        evaluate("[variables('c')]", template)
    with fails("InvalidTemplate", "the template has no parameter 'p'"):
        evaluate("[parameters('p')]", template)
    template = {"parameters": {"p": {"type": "string", "defaultValue": "[parameters('p')]"}}}
    with fails("InvalidTemplate", "circular reference: parameters('p') -> parameters('p')"):
        evaluate("[parameters('p')]", template)


def test_errors_in_variables_name_where_they_are():
    template = {"variables": {"v": {"deep": ["[foo()]"]}}}
    with fails("InvalidTemplate", "variables.v.deep[0]: unknown function 'foo' (in expression '[foo()]')"):
        evaluate("[variables('v')]", template)


def test_reference_is_refused_in_variables():
    template = {"variables": {"v": "[reference('x')]"}}
    with fails("InvalidTemplate", "reference() cannot be used in variables('v')"):
        evaluate("[variables('v')]", template)


# --- resources, order and references --------------------------------------------------------------


def storage(name="[parameters('storageName')]", **extra):
    return {
        "type": "Microsoft.Storage/storageAccounts",
        "apiVersion": "2023-05-01",
        "name": name,
        "location": "[resourceGroup().location]",
        "sku": {"name": "Standard_LRS"},
        "kind": "StorageV2",
        "properties": {"supportsHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2"},
        **extra,
    }


def site(name="app", **extra):
    return {
        "type": "Microsoft.Web/sites",
        "apiVersion": "2024-04-01",
        "name": name,
        "location": "[resourceGroup().location]",
        "kind": "app,linux",
        "properties": {"serverFarmId": "[resourceId('Microsoft.Web/serverfarms', 'plan')]"},
        **extra,
    }


def farm(**extra):
    return {
        "type": "Microsoft.Web/serverfarms",
        "apiVersion": "2024-04-01",
        "name": "plan",
        "location": "[resourceGroup().location]",
        "sku": {"name": "P1v3", "capacity": "[parameters('instances')]"},
        "properties": {"reserved": True},
        **extra,
    }


# A representative distribution point: storage + plan + Linux site, with outputs that read the
# runtime state of the resources (reference) and their keys (listKeys).
REPRESENTATIVE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {
        "storageName": {"type": "string", "defaultValue": "[concat('st', uniqueString(resourceGroup().id))]"},
        "instances": {"type": "int", "defaultValue": 2, "minValue": 1},
    },
    "variables": {"storageId": "[resourceId('Microsoft.Storage/storageAccounts', parameters('storageName'))]"},
    "resources": [
        site(
            dependsOn=["[resourceId('Microsoft.Web/serverfarms', 'plan')]", "[variables('storageId')]"],
            identity={"type": "SystemAssigned"},
            resources=[
                {
                    "type": "config",
                    "apiVersion": "2024-04-01",
                    "name": "web",
                    "dependsOn": ["app"],
                    "properties": {"linuxFxVersion": "PYTHON|3.11", "numberOfWorkers": "[parameters('instances')]"},
                }
            ],
        ),
        storage(),
        farm(),
    ],
    "outputs": {
        "blobEndpoint": {"type": "string", "value": "[reference(variables('storageId')).primaryEndpoints.blob]"},
        "hostName": {"type": "string", "value": "[reference(resourceId('Microsoft.Web/sites', 'app')).defaultHostName]"},
        "siteLocation": {"type": "string", "value": "[reference('app', '2024-04-01', 'Full').location]"},
        "storageKey": {"type": "secureString", "value": "[listKeys(variables('storageId'), '2023-05-01').keys[0].value]"},
        "keyName": {"type": "string", "value": "[listKeys(variables('storageId'), '2023-05-01').keys[0].keyName]"},
        "instances": {"type": "int", "value": "[parameters('instances')]"},
        "ids": {"type": "array", "value": ["[variables('storageId')]"]},
    },
}


def test_deploy_representative_template_in_dependency_order():
    provider = RecordingProvider()
    result = deploy(REPRESENTATIVE, {"instances": {"value": 3}}, GROUP, provider)
    storage_name = "st" + unique_string(RG_ID)
    assert provider.put_order == [storage_name, "plan", "app", "app/web"]
    assert result.resources == [
        f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/{storage_name}",
        f"{RG_ID}/providers/Microsoft.Web/serverfarms/plan",
        f"{RG_ID}/providers/Microsoft.Web/sites/app",
        f"{RG_ID}/providers/Microsoft.Web/sites/app/config/web",
    ]
    assert result.outputs == {
        "blobEndpoint": {"type": "String", "value": f"https://127.0.0.1:10000/{storage_name}/"},
        "hostName": {"type": "String", "value": "app.azurewebsites.net"},
        "siteLocation": {"type": "String", "value": "westeurope"},
        "storageKey": {"type": "SecureString"},  # secure outputs carry no value
        "keyName": {"type": "String", "value": "key1"},
        "instances": {"type": "Int", "value": 3},
        "ids": {"type": "Array", "value": [result.resources[0]]},
    }
    assert provider.keys_asked[0] == (result.resources[0], "2023-05-01")
    config = provider.states[result.resources[3].lower()]
    assert config["type"] == "Microsoft.Web/sites/config"
    assert config["properties"]["numberOfWorkers"] == 3


def test_resolved_resources_carry_the_evaluated_declaration():
    resources = {r.type: r for r in plan(REPRESENTATIVE, {}, GROUP).resources}
    account = resources["Microsoft.Storage/storageAccounts"]
    assert account.body == {
        "location": "westeurope",
        "sku": {"name": "Standard_LRS"},
        "kind": "StorageV2",
        "properties": {"supportsHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2"},
    }
    assert account.api_version == "2023-05-01" and account.resource_group == "rg-1"
    app = resources["Microsoft.Web/sites"]
    assert app.depends_on == (f"{RG_ID}/providers/Microsoft.Web/serverfarms/plan", account.id)
    assert app.properties["serverFarmId"] == f"{RG_ID}/providers/Microsoft.Web/serverfarms/plan"
    assert resources["Microsoft.Web/serverfarms"].body["sku"]["capacity"] == 2


def test_plan_leaves_runtime_values_as_expressions():
    result = plan(REPRESENTATIVE, {}, GROUP)
    assert [r.name for r in result.resources] == [result.resources[0].name, "plan", "app", "app/web"]
    assert result.outputs["blobEndpoint"]["value"] == REPRESENTATIVE["outputs"]["blobEndpoint"]["value"]
    assert result.outputs["instances"] == {"type": "Int", "value": 2}


def test_depends_on_accepts_ids_names_and_type_slash_name():
    template = {
        "resources": [
            site("a", dependsOn=["b"]),
            site("b", dependsOn=["Microsoft.Web/sites/c"]),
            site("c", dependsOn=[f"{RG_ID}/providers/MICROSOFT.WEB/sites/d"]),
            site("d"),
        ]
    }
    provider = RecordingProvider()
    deploy(template, None, GROUP, provider)
    assert provider.put_order == ["d", "c", "b", "a"]


def test_independent_resources_keep_template_order():
    template = {"resources": [site("z"), site("y", dependsOn=["x"]), site("x"), site("w")]}
    provider = RecordingProvider()
    deploy(template, None, GROUP, provider)
    assert provider.put_order == ["z", "x", "y", "w"]


def test_nested_child_types_with_full_type_and_name():
    template = {
        "resources": [
            {"type": "Microsoft.Web/sites/config", "apiVersion": "2024-04-01", "name": "app/web",
             "dependsOn": ["[resourceId('Microsoft.Web/sites', 'app')]"], "properties": {}},
            site("app"),
        ]
    }
    provider = RecordingProvider()
    result = deploy(template, None, GROUP, provider)
    assert provider.put_order == ["app", "app/web"]
    assert result.resources[1] == f"{RG_ID}/providers/Microsoft.Web/sites/app/config/web"


def test_reference_creates_an_implicit_dependency():
    template = {
        "resources": [
            site("app", properties={"blob": "[reference('st1').primaryEndpoints.blob]"}),
            storage("st1"),
        ]
    }
    provider = RecordingProvider()
    deploy(template, None, GROUP, provider)
    assert provider.put_order == ["st1", "app"]
    assert provider.states[f"{RG_ID}/providers/Microsoft.Web/sites/app".lower()]["properties"]["blob"] == (
        "https://127.0.0.1:10000/st1/"
    )


def test_depends_on_naming_nothing_is_an_error_naming_it():
    template = {"resources": [site("app", dependsOn=["[resourceId('Microsoft.Web/serverfarms', 'nope')]"])]}
    with fails("InvalidTemplate", "resources[0].dependsOn[0]", "Microsoft.Web/sites 'app' depends on",
               "serverfarms/nope', which is not a resource of this template"):
        deploy(template, None, GROUP, RecordingProvider())


def test_dependency_cycles_are_errors_naming_the_resources():
    template = {"resources": [site("a", dependsOn=["b"]), site("b", dependsOn=["c"]), site("c", dependsOn=["a"])]}
    with fails("InvalidTemplate", "circular dependency between resources", "'a'", "'b'", "'c'"):
        plan(template, None, GROUP)
    with fails("InvalidTemplate", "circular dependency"):
        plan({"resources": [site("a", dependsOn=["a"])]}, None, GROUP)


def test_duplicate_resources_are_errors():
    with fails("InvalidTemplate", "is declared more than once"):
        plan({"resources": [site("a"), site("A")]}, None, GROUP)


def test_conditions_skip_resources():
    template = {
        "parameters": {"withStorage": {"type": "bool"}},
        "resources": [storage("st1", condition="[parameters('withStorage')]"), site("app", dependsOn=["st1"])],
    }
    provider = RecordingProvider()
    result = deploy(template, {"withStorage": False}, GROUP, provider)
    assert provider.put_order == ["app"]
    assert result.skipped == [f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/st1"]
    assert plan(template, {"withStorage": True}, GROUP).skipped == []


def test_reference_to_a_skipped_resource_is_an_error():
    template = {
        "resources": [storage("st1", condition="[false()]")],
        "outputs": {"blob": {"type": "string", "value": "[reference('st1').primaryEndpoints.blob]"}},
    }
    with fails("InvalidTemplate", "outputs.blob.value: reference('st1')", "its condition is false"):
        deploy(template, None, GROUP, RecordingProvider())


def test_reference_to_what_does_not_exist_is_named():
    missing = f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/gone"
    template = {"outputs": {"o": {"type": "object", "value": f"[reference('{missing}')]"}}}
    with fails("ResourceNotFound", f"reference('{missing}'): resource '{missing}' not found"):
        deploy(template, None, GROUP, RecordingProvider())
    template = {"outputs": {"o": {"type": "object", "value": "[reference('nothing')]"}}}
    with fails("ResourceNotFound", "reference('nothing'): no resource named 'nothing' in the template"):
        deploy(template, None, GROUP, RecordingProvider())
    template = {"outputs": {"o": {"type": "object", "value": f"[listKeys('{missing}', '2023-05-01')]"}}}
    with fails("ResourceNotFound", f"listKeys('{missing}'): resource '{missing}' not found"):
        deploy(template, None, GROUP, RecordingProvider())


def test_reference_reads_resources_outside_the_template_from_the_provider():
    other = f"/subscriptions/{SUB}/resourceGroups/shared/providers/Microsoft.Storage/storageAccounts/shared1"
    provider = RecordingProvider({other: {"id": other, "properties": {"primaryEndpoints": {"blob": "https://b/"}}}})
    template = {
        "outputs": {
            "blob": {"type": "string",
                     "value": "[reference(resourceId('shared', 'Microsoft.Storage/storageAccounts', 'shared1')).primaryEndpoints.blob]"},
        }
    }
    assert deploy(template, None, GROUP, provider).outputs["blob"]["value"] == "https://b/"


def test_resource_errors_name_the_resource_and_path():
    template = {"resources": [storage("st1", properties={"x": ["ok", "[foo('a')]"]})]}
    with fails("InvalidTemplate", "resources[0].properties.x[1]: unknown function 'foo' (in expression '[foo('a')]')"):
        plan(template, None, GROUP)


def test_resource_names_cannot_use_reference():
    template = {"resources": [storage("[reference('x').name]"), storage("x")]}
    with fails("InvalidTemplate", "resources[0].name: must not use reference() or listKeys()"):
        plan(template, None, GROUP)


def test_copy_loops_are_refused_clearly():
    template = {"resources": [storage("st1", copy={"name": "c", "count": 2})]}
    with fails("InvalidTemplate", "resources[0]: copy loops are not supported"):
        plan(template, None, GROUP)


# --- outputs and scopes --------------------------------------------------------------------------


def test_outputs_must_match_their_declared_type():
    template = {"outputs": {"count": {"type": "int", "value": "[string(2)]"}}}
    with fails("InvalidTemplate", "outputs.count: output 'count' is declared int but its value is a string"):
        deploy(template, None, GROUP, RecordingProvider())
    template = {"outputs": {"flag": {"type": "bool", "value": 1}}}
    with fails("InvalidTemplate", "declared bool but its value is an integer"):
        deploy(template, None, GROUP, RecordingProvider())


def test_output_conditions_and_object_values():
    template = {
        "outputs": {
            "hidden": {"type": "string", "condition": "[false()]", "value": "x"},
            "obj": {"type": "object", "value": {"rg": "[resourceGroup().name]", "n": 1}},
        }
    }
    assert deploy(template, None, GROUP, RecordingProvider()).outputs == {
        "obj": {"type": "Object", "value": {"rg": "rg-1", "n": 1}}
    }


def test_template_scope_must_match_the_deployment():
    sub_template = {"$schema": "https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentTemplate.json#"}
    group_template = {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"}
    with fails("InvalidTemplateDeployment", "subscription-scope template cannot be deployed to a resource group"):
        plan(sub_template, None, GROUP)
    with fails("InvalidTemplateDeployment", "resource-group template must be deployed to a resource group"):
        plan(group_template, None, SUBSCRIPTION)


def test_resource_groups_at_subscription_scope_get_subscription_level_ids():
    template = {
        "parameters": {"name": {"type": "string"}},
        "resources": [
            {"type": "Microsoft.Resources/resourceGroups", "apiVersion": "2022-09-01",
             "name": "[parameters('name')]", "location": "westeurope", "properties": {}},
        ],
        "outputs": {"id": {"type": "string", "value": "[subscriptionResourceId('Microsoft.Resources/resourceGroups', parameters('name'))]"}},
    }
    result = deploy(template, {"name": "cdp-rg"}, SUBSCRIPTION, RecordingProvider())
    assert result.resources == [f"/subscriptions/{SUB}/resourceGroups/cdp-rg"]
    assert result.outputs["id"]["value"] == result.resources[0]


# --- the real templates ---------------------------------------------------------------------------


def test_real_templates_deploy_end_to_end(tmp_path):
    rendered = templates.render(Site.open(tmp_path), templates.Spec("dp1", instances=3))
    names = rendered.names
    provider = RecordingProvider()

    group = deploy(
        rendered.template(templates.RESOURCE_GROUP), rendered.parameters(templates.RESOURCE_GROUP),
        DeploymentScope(SUB, "tenant-1", "westeurope", "cdp-dp1-rg"), provider,
    )
    assert group.resources == [f"/subscriptions/{SUB}/resourceGroups/{names.resource_group}"]
    assert group.outputs["resourceGroupName"]["value"] == names.resource_group
    assert group.outputs["templateHash"]["value"] == rendered.template_hash
    tags = provider.states[group.resources[0].lower()]["tags"]
    assert tags["cdp-template-hash"] == rendered.template_hash and tags["cdp-distribution-point"] == "dp1"

    scope = DeploymentScope(SUB, "tenant-1", "westeurope", "cdp-dp1", names.resource_group)
    which = templates.DISTRIBUTION_POINT
    what_if = plan(rendered.template(which), rendered.parameters(which), scope)
    result = deploy(rendered.template(which), rendered.parameters(which), scope, provider)
    assert provider.put_order[1:4] == [names.storage_account, names.plan, names.site]
    role = provider.get(result.resources[3])
    assert role["type"] == "Microsoft.Authorization/roleAssignments"
    assert role["properties"]["principalId"] == f"principal-of-{names.site}"
    assert [r.id for r in what_if.resources] == result.resources
    assert result.outputs["blobEndpoint"]["value"] == f"https://127.0.0.1:10000/{names.storage_account}/"
    assert result.outputs["serviceHostName"]["value"] == f"{names.site}.azurewebsites.net"
    assert result.outputs["instances"] == {"type": "Int", "value": 3}
    site_state = provider.get(result.resources[2])
    assert site_state["properties"]["serverFarmId"] == result.resources[1]
    assert site_state["properties"]["httpsOnly"] is True
    plan_state = provider.get(result.resources[1])
    assert plan_state["sku"]["capacity"] == 3
    account = provider.get(result.resources[0])
    assert account["sku"] == {"name": "Standard_LRS"} and account["properties"]["minimumTlsVersion"] == "TLS1_2"
