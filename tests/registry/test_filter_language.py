"""The filter language: parser, error positions, GLOB translation, and the SQL it compiles to.

The SQL is run for real on SQLite (always) and on PostgreSQL and MariaDB when their servers
are reachable (the same ``MODELREG_TEST_*_URL`` variables as the rest of the suite; skipped
otherwise, failed when ``CI=true``), and compiled for the PostgreSQL and MySQL/MariaDB dialects
in any case.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

from modelreg.errors import BadRequest
from modelreg.models import Alias, Base, Model, ModelTag, Version, VersionTag
from modelreg.registry.filters import (
    MAX_FILTER_LENGTH,
    And,
    Comparison,
    Not,
    Or,
    Value,
    glob_to_like,
    model_filter,
    parse_filter,
    version_filter,
)

# --- parser --------------------------------------------------------------------------------


def cmp(field: str, op: str, *values: Any) -> tuple[str, str, tuple[Any, ...]]:
    return field, op, values


def shape(node: Any) -> Any:
    """The tree without positions, for compact assertions."""
    if isinstance(node, And):
        return ("AND", *(shape(item) for item in node.items))
    if isinstance(node, Or):
        return ("OR", *(shape(item) for item in node.items))
    if isinstance(node, Not):
        return ("NOT", shape(node.item))
    assert isinstance(node, Comparison)
    return cmp(node.field, node.op, *(value.value for value in node.values))


def test_and_binds_tighter_than_or() -> None:
    assert shape(parse_filter("a = 1 OR b = 2 AND c = 3")) == (
        "OR",
        cmp("a", "=", 1),
        ("AND", cmp("b", "=", 2), cmp("c", "=", 3)),
    )
    assert shape(parse_filter("a = 1 AND b = 2 OR c = 3")) == (
        "OR",
        ("AND", cmp("a", "=", 1), cmp("b", "=", 2)),
        cmp("c", "=", 3),
    )


def test_parentheses_group() -> None:
    assert shape(parse_filter("(a = 1 OR b = 2) AND c = 3")) == (
        "AND",
        ("OR", cmp("a", "=", 1), cmp("b", "=", 2)),
        cmp("c", "=", 3),
    )
    assert shape(parse_filter("((a = 1))")) == cmp("a", "=", 1)


def test_chains_are_flat() -> None:
    assert shape(parse_filter("a = 1 OR b = 2 OR c = 3")) == (
        "OR",
        cmp("a", "=", 1),
        cmp("b", "=", 2),
        cmp("c", "=", 3),
    )


def test_not_binds_tightest() -> None:
    assert shape(parse_filter("NOT a = 1 AND b = 2")) == (
        "AND",
        ("NOT", cmp("a", "=", 1)),
        cmp("b", "=", 2),
    )
    assert shape(parse_filter("NOT (a = 1 AND b = 2)")) == (
        "NOT",
        ("AND", cmp("a", "=", 1), cmp("b", "=", 2)),
    )
    assert shape(parse_filter("NOT NOT a = 1")) == ("NOT", ("NOT", cmp("a", "=", 1)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = 'x'", cmp("a", "=", "x")),
        ("a != 'x'", cmp("a", "!=", "x")),
        ("a <> 'x'", cmp("a", "!=", "x")),
        ("a<1", cmp("a", "<", 1)),
        ("a<=1", cmp("a", "<=", 1)),
        ("a>1", cmp("a", ">", 1)),
        ("a>=-1", cmp("a", ">=", -1)),
        ("a = 0.95", cmp("a", "=", 0.95)),
        ("a = 1e3", cmp("a", "=", 1000.0)),
        ("a = TRUE", cmp("a", "=", True)),
        ("a = false", cmp("a", "=", False)),
        ("a IN ('x', \"y\", 3, -1.5, TRUE)", cmp("a", "IN", "x", "y", 3, -1.5, True)),
        ("a not in ('x')", cmp("a", "NOT IN", "x")),
        ("a LIKE 'x%'", cmp("a", "LIKE", "x%")),
        ("a NOT LIKE 'x%'", cmp("a", "NOT LIKE", "x%")),
        ("a GLOB 'x*'", cmp("a", "GLOB", "x*")),
        ("a not glob 'x*'", cmp("a", "NOT GLOB", "x*")),
        ("a IS NULL", cmp("a", "IS NULL")),
        ("a is Not null", cmp("a", "IS NOT NULL")),
        ("tag.env.prod-1 = 'x'", cmp("tag.env.prod-1", "=", "x")),
        ("metadata.metrics.auc > 0.9", cmp("metadata.metrics.auc", ">", 0.9)),
    ],
)
def test_comparisons(text: str, expected: Any) -> None:
    assert shape(parse_filter(text)) == expected


def test_keywords_are_case_insensitive() -> None:
    assert shape(parse_filter("a = 1 and not b in (2) Or c iS nOt NuLl")) == (
        "OR",
        ("AND", cmp("a", "=", 1), ("NOT", cmp("b", "IN", 2))),
        cmp("c", "IS NOT NULL"),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"a = 'it\'s'", "it's"),
        (r'a = "say \"hi\""', 'say "hi"'),
        (r"a = 'back\\slash'", "back\\slash"),
        (r"""a = "it's" """, "it's"),
        (r"""a = 'say "hi"'""", 'say "hi"'),
        ("a = ''", ""),
        ("a = 'AND OR ( ) ,'", "AND OR ( ) ,"),
    ],
)
def test_strings_and_escapes(text: str, value: str) -> None:
    node = parse_filter(text)
    assert isinstance(node, Comparison)
    assert node.values == (Value(value, 4),)


def test_positions() -> None:
    node = parse_filter("x = 1 AND  tag.team IN ('a', 'b')")
    assert isinstance(node, And)
    second = node.items[1]
    assert isinstance(second, Comparison)
    assert (second.position, second.op_position) == (11, 20)
    assert [value.position for value in second.values] == [24, 29]
    assert second.path == ("tag", "team")


def error_of(function: Any, text: str) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        function(text)
    error = info.value
    assert error.code == "invalid_filter"
    assert error.status == 400
    assert error.details["filter"] == text[:MAX_FILTER_LENGTH]
    return error


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "empty filter"),
        ("   ", 0, "empty filter"),
        ("name = 'fraud", 7, "unterminated string starting at position 7"),
        ('name = "fraud', 7, "unterminated string"),
        (r"name = 'a\nb'", 9, "invalid escape"),
        ("name = 'x' description", 11, "unexpected 'description' at position 11"),
        ("name = 'x')", 10, "unexpected ')' at position 10"),
        ("(name = 'x'", 11, "expected ')' at position 11 to close the '(' at position 0"),
        ("(name = 'x' OR (a = 1)", 22, "expected ')' at position 22"),
        ("name = fraud", 7, "quote text values, e.g. 'fraud'"),
        ("name =", 6, "expected a value"),
        ("name = NULL", 7, "use IS NULL or IS NOT NULL"),
        ("name 'x'", 5, "expected an operator"),
        ("name == 'x'", 6, "expected a value"),
        ("name IS 'x'", 8, "expected NULL or NOT NULL after 'IS'"),
        ("name NOT = 'x'", 9, "expected IN, LIKE or GLOB after 'NOT'"),
        ("name IN 'x'", 8, "expected '(' after 'IN'"),
        ("name IN ()", 9, "expected a value"),
        ("name IN ('a' 'b')", 13, "expected ',' or ')' in the IN list"),
        ("name LIKE 3", 10, "expected a quoted pattern after 'LIKE'"),
        ("AND name = 'x'", 0, "expected a field name, NOT or '('"),
        ("name = 'x' AND", 14, "expected a field name"),
        ("name # 'x'", 5, "unexpected character '#'"),
        ("number = 1.2.3", 9, "invalid number"),
        ("number = 12abc", 9, "invalid number"),
        ("number = 99999999999999999999", 9, "number out of range"),
        ("number = 1e999", 9, "number out of range"),
        ("name = 'a\x00b'", 9, "NUL character"),
    ],
)
def test_syntax_errors(text: str, position: int, message: str) -> None:
    error = error_of(parse_filter, text)
    assert error.details["position"] == position
    assert message in error.message
    # The position is in the message too, for people reading it.
    assert f"position {position}" in error.message


def test_too_long() -> None:
    text = "name = '" + "x" * MAX_FILTER_LENGTH + "'"
    error = error_of(parse_filter, text)
    assert error.details["position"] == MAX_FILTER_LENGTH
    assert "too long" in error.message
    assert parse_filter("name = '" + "x" * (MAX_FILTER_LENGTH - 9) + "'")  # exactly the limit


def test_too_deep() -> None:
    assert parse_filter("(" * 32 + "a = 1" + ")" * 32)
    error = error_of(parse_filter, "(" * 33 + "a = 1" + ")" * 33)
    assert error.details["position"] == 32
    assert "nested too deeply" in error.message
    assert parse_filter("NOT " * 32 + "a = 1")
    error = error_of(parse_filter, "NOT " * 33 + "a = 1")
    assert error.details["position"] == 4 * 32


def test_too_many_terms() -> None:
    assert parse_filter(" OR ".join(["a = 1"] * 100))
    error = error_of(parse_filter, " OR ".join(["a = 1"] * 101))
    assert error.details["position"] == 900
    assert "too many comparisons" in error.message


# --- errors found when compiling against an entity ------------------------------------------


@pytest.mark.parametrize(
    ("function", "text", "position", "message"),
    [
        (
            model_filter,
            "nmae = 'x'",
            0,
            "unknown field 'nmae' at position 0; known fields: alias, created, description, "
            "name, tag.<key>, updated",
        ),
        (model_filter, "name = 'x' AND status = 'ready'", 15, "unknown field 'status'"),
        (model_filter, "metadata.x = 1", 0, "unknown field 'metadata.x'"),
        (model_filter, "name.first = 'x'", 0, "unknown field 'name.first'"),
        (version_filter, "modle = 'x'", 0, "metadata.<path>, model, number, status"),
        (model_filter, "name = 3", 7, "expected a quoted string after '=' at position 7"),
        (model_filter, "name IN ('a', 2)", 14, "expected a quoted string in the IN list"),
        (model_filter, "tag.team = TRUE", 11, "expected a quoted string"),
        (model_filter, "tag. = 'x'", 4, "expected a tag key after 'tag.'"),
        (model_filter, "tag = 'x'", 4, "expected a tag key"),
        (model_filter, "tag.-x = 'x'", 4, "expected a tag key"),
        (model_filter, "description < 'x'", 12, "operator < is not supported for field"),
        (model_filter, "name IS NULL", 5, "operator IS NULL is not supported for field 'name'"),
        (model_filter, "created LIKE '2026%'", 8, "supported: =, !=, <, <=, >, >="),
        (model_filter, "created > 'yesterday'", 10, "invalid timestamp 'yesterday'"),
        (model_filter, "created > '2026-02-30'", 10, "invalid timestamp"),
        (model_filter, "created > '2026-01-01Z'", 10, "invalid timestamp"),
        (model_filter, "created > 20260101", 10, "expected a quoted ISO-8601 timestamp"),
        (model_filter, r"name LIKE 'abc\\'", 10, "unpaired escape"),
        (version_filter, "status = 'done'", 9, "invalid status 'done' at position 9"),
        (version_filter, "status IN ('ready', 'Ready')", 20, "invalid status 'Ready'"),
        (version_filter, "number = '3'", 9, "expected an integer"),
        (version_filter, "number = 1.5", 9, "expected an integer"),
        (version_filter, "number = TRUE", 9, "expected an integer"),
        (version_filter, "number LIKE '1%'", 7, "operator LIKE is not supported"),
        (version_filter, "digest LIKE 'sha%'", 7, "operator LIKE is not supported"),
        (version_filter, "metadata = 1", 9, "expected a metadata path"),
        (version_filter, "metadata.a..b = 1", 9, "expected a metadata path"),
        (version_filter, "metadata.a. = 1", 9, "expected a metadata path"),
        (version_filter, "metadata.gpu > TRUE", 15, "TRUE and FALSE only work with = and !="),
        (version_filter, "metadata.gpu IN (TRUE)", 17, "TRUE and FALSE only work"),
        (version_filter, "metadata.x IN ('a', 1)", 20, "mixed strings and numbers"),
        (version_filter, "metadata.x LIKE 'a' OR metadata.x = 1", -1, ""),  # valid
        (version_filter, "model < 'x'", 6, "operator < is not supported for field 'model'"),
    ],
)
def test_compile_errors(function: Any, text: str, position: int, message: str) -> None:
    if position < 0:
        function(text)
        return
    error = error_of(function, text)
    assert error.details["position"] == position
    assert message in error.message


def test_syntax_errors_come_first() -> None:
    error = error_of(model_filter, "nmae = 'x' AND (")
    assert error.details["position"] == 16


# --- GLOB ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "like"),
    [
        ("", ""),
        ("*", "%"),
        ("fraud-*", "fraud-%"),
        ("a?c", "a_c"),
        ("*.v?", "%.v_"),
        ("100%", "100\\%"),
        ("a_b*", "a\\_b%"),
        ("back\\slash", "back\\\\slash"),
        ("[abc]", "[abc]"),
    ],
)
def test_glob_to_like(glob: str, like: str) -> None:
    assert glob_to_like(glob) == like


# --- running the SQL -----------------------------------------------------------------------

BACKENDS = ("sqlite", "postgresql", "mariadb")
SERVER_URLS = {
    "postgresql": (
        "MODELREG_TEST_POSTGRESQL_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ),
    "mariadb": ("MODELREG_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def selected_backends() -> list[str]:
    wanted = os.environ.get("MODELREG_TEST_BACKENDS")
    return [b.strip() for b in wanted.split(",")] if wanted else list(BACKENDS)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args)


def populate(session: Session) -> None:
    """Four models with tags, versions (with metadata) and aliases."""

    def model(name: str, created: dt.datetime, description: str, **tags: str) -> Model:
        row = Model(
            name=name,
            normalized_name=name.casefold(),
            description=description,
            created_at=created,
            updated_at=created,
            tags=[ModelTag(key=key.replace("__", "."), value=value) for key, value in tags.items()],
        )
        session.add(row)
        return row

    detector = model("fraud-detector", utc(2025, 6, 1, 10), "Detects fraud", team="fraud")
    scorer = model("Fraud_Scorer", utc(2026, 1, 15, 12), "Scores 100% of payments", team="risk")
    churn = model("churn-model", utc(2026, 3, 1), "Predicts churn", env__prod="yes")
    model("plain", utc(2026, 4, 1), "")
    session.flush()

    def version(owner: Model, number: int, status: str, created: dt.datetime, **kw: Any) -> Version:
        tags = kw.pop("tags", {})
        row = Version(
            model_id=owner.id,
            number=number,
            status=status,
            created_at=created,
            updated_at=created,
            tags=[VersionTag(key=key, value=value) for key, value in tags.items()],
            **kw,
        )
        session.add(row)
        return row

    d1 = version(
        detector,
        1,
        "ready",
        utc(2025, 6, 2),
        digest="sha256:aa",
        metadata_={"framework": "pytorch", "metrics": {"auc": 0.91}, "gpu": True},
        tags={"stage": "prod"},
    )
    d2 = version(
        detector,
        2,
        "ready",
        utc(2026, 1, 10),
        digest="sha256:bb",
        metadata_={"framework": "sklearn", "metrics": {"auc": 0.95}, "gpu": False},
    )
    version(
        scorer,
        1,
        "draft",
        utc(2026, 1, 16),
        metadata_={"framework": "pytorch", "metrics": {"auc": "n/a"}, "gpu": "yes"},
    )
    version(
        churn, 1, "rejected", utc(2026, 3, 2), metadata_={"metrics": {"auc": None}, "framework": 3}
    )
    c2 = version(churn, 2, "validating", utc(2026, 3, 5, 12), metadata_={})
    session.flush()
    session.add_all(
        [
            Alias(model_id=detector.id, name="champion", version_id=d2.id),
            Alias(model_id=detector.id, name="previous", version_id=d1.id),
            Alias(model_id=churn.id, name="staging", version_id=c2.id),
        ]
    )
    session.commit()


def sqlite_engine(path: str) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # As modelreg.db configures SQLite for the app.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA case_sensitive_like = ON")
        cursor.close()

    return engine


@pytest.fixture(scope="module", params=selected_backends())
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Session]:
    backend = request.param
    admin = name = None
    if backend == "sqlite":
        engine = sqlite_engine(str(tmp_path_factory.mktemp("filters") / "filters.sqlite"))
    else:
        variable, default = SERVER_URLS[backend]
        admin_url = sa.engine.make_url(os.environ.get(variable, default))
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = f"modelreg_filters_{uuid.uuid4().hex[:12]}"
        collation = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if backend == "mariadb" else ""
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}{collation}")
        except sa.exc.OperationalError:
            admin.dispose()
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"{backend} server unreachable (CI=true)")
            pytest.skip(f"{backend} server unreachable")
        engine = sa.create_engine(admin_url.set(database=name))
    # create_all instead of the migrations is acceptable here ONLY because this is a unit test
    # of how filter expressions compile and evaluate, not of the schema (migrations own that).
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        populate(session)
        yield session
    engine.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def models(session: Session, text: str) -> set[str]:
    return set(session.scalars(sa.select(Model.name).where(model_filter(text))))


def versions(session: Session, text: str) -> set[str]:
    rows = session.scalars(sa.select(Version).where(version_filter(text))).unique()
    return {f"{row.model.name}/{row.number}" for row in rows}


ALL_MODELS = {"fraud-detector", "Fraud_Scorer", "churn-model", "plain"}
D1, D2, S1, C1, C2 = (
    "fraud-detector/1",
    "fraud-detector/2",
    "Fraud_Scorer/1",
    "churn-model/1",
    "churn-model/2",
)
ALL_VERSIONS = {D1, D2, S1, C1, C2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # name: normalized on both sides, so case-insensitive.
        ("name = 'fraud-detector'", {"fraud-detector"}),
        ("name = 'FRAUD_scorer'", {"Fraud_Scorer"}),
        ("name = '\uff26\uff32\uff21\uff35\uff24-detector '", {"fraud-detector"}),  # fullwidth
        ("name != 'fraud-detector'", ALL_MODELS - {"fraud-detector"}),
        ("name IN ('churn-model', 'Fraud-Detector', 'nope')", {"churn-model", "fraud-detector"}),
        ("name NOT IN ('churn-model', 'plain')", {"fraud-detector", "Fraud_Scorer"}),
        ("name LIKE 'fraud%'", {"fraud-detector", "Fraud_Scorer"}),
        ("name LIKE 'FRAUD_%'", {"fraud-detector", "Fraud_Scorer"}),  # _ is a wildcard
        (r"name LIKE 'fraud\\_%'", {"Fraud_Scorer"}),  # unless escaped
        ("name NOT LIKE 'fraud%'", {"churn-model", "plain"}),
        ("name GLOB 'fraud*'", {"fraud-detector", "Fraud_Scorer"}),
        ("name GLOB 'fraud_*'", {"Fraud_Scorer"}),  # _ is literal in a glob
        ("name GLOB '?????-*'", {"churn-model", "fraud-detector"}),
        ("name GLOB 'p*n'", {"plain"}),
        ("name GLOB 'p*x'", set()),
        ("name NOT GLOB '*-*'", {"Fraud_Scorer", "plain"}),
        ("name < 'd'", {"churn-model"}),
        ("name >= 'd' AND name < 'g'", {"fraud-detector", "Fraud_Scorer"}),
        # description: case-sensitive LIKE, % in a glob is literal.
        ("description = 'Detects fraud'", {"fraud-detector"}),
        ("description LIKE 'Detects%'", {"fraud-detector"}),
        ("description LIKE 'detects%'", set()),
        ("description GLOB '*100%*'", {"Fraud_Scorer"}),
        ("description GLOB '*1?0*'", {"Fraud_Scorer"}),
        ("description GLOB '*10%*'", set()),
        (r"description LIKE '%100\\%%'", {"Fraud_Scorer"}),
        ("description != ''", ALL_MODELS - {"plain"}),
        # tags: != and NOT IN also match models without the tag.
        ("tag.team = 'fraud'", {"fraud-detector"}),
        ("tag.team != 'fraud'", ALL_MODELS - {"fraud-detector"}),
        ("tag.team IN ('risk', 'ops')", {"Fraud_Scorer"}),
        ("tag.team NOT IN ('risk', 'ops')", ALL_MODELS - {"Fraud_Scorer"}),
        ("tag.team LIKE 'r%'", {"Fraud_Scorer"}),
        ("tag.team GLOB '*r*'", {"fraud-detector", "Fraud_Scorer"}),
        ("tag.team IS NOT NULL", {"fraud-detector", "Fraud_Scorer"}),
        ("tag.team IS NULL", {"churn-model", "plain"}),
        ("tag.Team IS NOT NULL", set()),  # keys are case-sensitive
        ("tag.env.prod = 'yes'", {"churn-model"}),
        ("tag.env IS NOT NULL", set()),
        # aliases
        ("alias = 'champion'", {"fraud-detector"}),
        ("alias != 'champion'", ALL_MODELS - {"fraud-detector"}),
        ("alias IN ('staging', 'x')", {"churn-model"}),
        ("alias GLOB 'stag*'", {"churn-model"}),
        ("alias IS NOT NULL", {"fraud-detector", "churn-model"}),
        ("alias IS NULL", {"Fraud_Scorer", "plain"}),
        # timestamps, with and without offsets
        ("created < '2026-01-01'", {"fraud-detector"}),
        ("created >= '2026-01-01' AND created < '2026-02-01'", {"Fraud_Scorer"}),
        ("created = '2026-03-01'", {"churn-model"}),
        ("created = '2026-03-01T00:00:00Z'", {"churn-model"}),
        ("created = '2026-03-01T02:00:00+02:00'", {"churn-model"}),
        ("created != '2026-03-01T00:00:00.000000Z'", ALL_MODELS - {"churn-model"}),
        ("created > '2026-01-15T13:00:00+01:00'", {"churn-model", "plain"}),
        ("created >= '2026-01-15T13:00:00+01:00'", {"Fraud_Scorer", "churn-model", "plain"}),
        ("updated <= '2025-06-01 10:00'", {"fraud-detector"}),
        # combinations
        ("alias IS NULL OR tag.team = 'fraud' AND name LIKE 'churn%'", {"Fraud_Scorer", "plain"}),
        (
            "(alias IS NULL OR tag.team = 'fraud') AND name LIKE 'fraud%'",
            {"fraud-detector", "Fraud_Scorer"},
        ),
        ("NOT name LIKE 'fraud%'", {"churn-model", "plain"}),
        ("NOT (name LIKE 'fraud%' OR alias IS NOT NULL)", {"plain"}),
        ("NOT NOT tag.team = 'fraud'", {"fraud-detector"}),
        ("NOT tag.team != 'fraud'", {"fraud-detector"}),
    ],
)
def test_model_filter_selects(db: Session, text: str, expected: set[str]) -> None:
    assert models(db, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("number = 2", {D2, C2}),
        ("number != 2", {D1, S1, C1}),
        ("number IN (1, 3)", {D1, S1, C1}),
        ("number > 1", {D2, C2}),
        ("status = 'ready'", {D1, D2}),
        ("status IN ('draft', 'validating')", {S1, C2}),
        ("status NOT IN ('ready')", {S1, C1, C2}),
        ("digest = 'sha256:aa'", {D1}),
        ("digest != 'sha256:aa'", {D2, S1, C1, C2}),  # NULL digests included
        ("NOT digest = 'sha256:aa'", {D2, S1, C1, C2}),
        ("digest IS NULL", {S1, C1, C2}),
        ("digest IS NOT NULL", {D1, D2}),
        ("created >= '2026-01-01' AND created < '2026-03-01'", {D2, S1}),
        ("created > '2026-03-05T13:00:00+01:00'", set()),
        ("created >= '2026-03-05T13:00:00+01:00'", {C2}),
        ("tag.stage = 'prod'", {D1}),
        ("tag.stage IS NULL", {D2, S1, C1, C2}),
        # aliases point at versions
        ("alias = 'champion'", {D2}),
        ("alias IN ('previous', 'staging')", {D1, C2}),
        ("alias IS NOT NULL", {D1, D2, C2}),
        ("alias IS NULL", {S1, C1}),
        ("alias != 'champion'", {D1, S1, C1, C2}),
        # the model, by normalized name
        ("model = 'FRAUD-DETECTOR'", {D1, D2}),
        ("model != 'fraud-detector'", {S1, C1, C2}),
        ("model IN ('churn-model', 'fraud_scorer')", {S1, C1, C2}),
        ("model LIKE 'fraud_%'", {D1, D2, S1}),
        ("model GLOB 'fraud_*'", {S1}),
        # metadata: strings
        ("metadata.framework = 'pytorch'", {D1, S1}),
        ("metadata.framework != 'pytorch'", {D2, C1, C2}),  # includes other types and absent
        ("metadata.framework IN ('pytorch', 'sklearn')", {D1, D2, S1}),
        ("metadata.framework LIKE 'py%'", {D1, S1}),
        ("metadata.framework GLOB '*learn'", {D2}),
        ("metadata.framework > 'q'", {D2}),
        ("metadata.framework = '3'", set()),  # the number 3 is not the string '3'
        ("metadata.gpu = 'yes'", {S1}),
        # metadata: numbers (the string 'n/a' and JSON null never compare)
        ("metadata.framework = 3", {C1}),
        ("metadata.metrics.auc > 0.9", {D1, D2}),
        ("metadata.metrics.auc >= 0.95", {D2}),
        ("metadata.metrics.auc < 1", {D1, D2}),
        ("metadata.metrics.auc <= 0", set()),
        ("metadata.metrics.auc = 0.91", {D1}),
        ("metadata.metrics.auc IN (0.95, 1)", {D2}),
        ("NOT metadata.metrics.auc > 0.9", {S1, C1, C2}),
        ("metadata.metrics.auc = 'n/a'", {S1}),
        # metadata: booleans
        ("metadata.gpu = TRUE", {D1}),
        ("metadata.gpu = FALSE", {D2}),
        ("metadata.gpu != TRUE", {D2, S1, C1, C2}),
        # metadata: presence (JSON null counts as absent)
        ("metadata.metrics.auc IS NOT NULL", {D1, D2, S1}),
        ("metadata.metrics.auc IS NULL", {C1, C2}),
        ("metadata.metrics IS NOT NULL", {D1, D2, S1, C1}),
        ("metadata.gpu IS NOT NULL", {D1, D2, S1}),
        ("metadata.missing IS NULL", ALL_VERSIONS),
        ("metadata.metrics.auc.deeper IS NOT NULL", set()),
        # combinations
        ("model = 'fraud-detector' AND (metadata.gpu = TRUE OR alias = 'champion')", {D1, D2}),
        ("NOT status = 'ready' AND number = 1", {S1, C1}),
        ("status = 'ready' AND metadata.metrics.auc > 0.92 OR model = 'churn-model'", {D2, C1, C2}),
        ("status = 'ready' AND (metadata.metrics.auc > 0.92 OR model = 'churn-model')", {D2}),
    ],
)
def test_version_filter_selects(db: Session, text: str, expected: set[str]) -> None:
    assert versions(db, text) == expected


def test_version_filter_with_the_model_joined(db: Session) -> None:
    # The filter's own subqueries must not be confused by a join on models in the query.
    query = (
        sa.select(Model.name, Version.number)
        .join(Model, Version.model_id == Model.id)
        .where(version_filter("model GLOB 'fraud*' AND alias IS NOT NULL"))
        .where(Model.name != "x")
    )
    assert {tuple(row) for row in db.execute(query)} == {
        ("fraud-detector", 1),
        ("fraud-detector", 2),
    }


def test_model_filter_inside_a_version_query(db: Session) -> None:
    query = sa.select(Version.number).where(
        Version.model_id.in_(sa.select(Model.id).where(model_filter("tag.team = 'fraud'")))
    )
    assert set(db.scalars(query)) == {1, 2}


def test_same_filter_twice(db: Session) -> None:
    # Statement caching must not mix up the parameters of two different filters.
    assert versions(db, "metadata.framework = 'pytorch'") == {D1, S1}
    assert versions(db, "metadata.framework = 'sklearn'") == {D2}
    assert versions(db, "metadata.gpu = TRUE") == {D1}
    assert versions(db, "metadata.gpu = FALSE") == {D2}


# --- compiling for every dialect -----------------------------------------------------------

SENTINEL = "zq-sentinel"
MODEL_FILTERS = [
    f"name = '{SENTINEL}'",
    f"name IN ('{SENTINEL}', 'b') OR name NOT LIKE '{SENTINEL}%'",
    f"name GLOB '{SENTINEL}*' AND name < '{SENTINEL}'",
    f"description != '{SENTINEL}'",
    f"tag.team = '{SENTINEL}' OR tag.env.prod IS NULL OR tag.x NOT GLOB '{SENTINEL}?'",
    f"alias = '{SENTINEL}' AND alias IS NOT NULL",
    "created >= '2026-01-01T00:00:00+02:00' AND NOT updated < '2026-01-01'",
]
VERSION_FILTERS = [
    "number IN (1, 2) AND number >= 1",
    "status = 'ready' OR status NOT IN ('draft')",
    f"digest != '{SENTINEL}' OR digest IS NULL",
    f"description LIKE '{SENTINEL}%'",
    f"tag.stage = '{SENTINEL}' AND alias = '{SENTINEL}'",
    f"model = '{SENTINEL}' OR model GLOB '{SENTINEL}*'",
    f"metadata.framework = '{SENTINEL}' AND metadata.framework LIKE '{SENTINEL}'",
    "metadata.metrics.auc > 0.9 AND metadata.metrics.auc IN (1, 2)",
    "metadata.gpu = TRUE OR NOT metadata.gpu = FALSE",
    "metadata.metrics IS NOT NULL AND metadata.x IS NULL",
]
DIALECTS = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    "mariadb": sa.engine.make_url("mariadb+pymysql://").get_dialect()(),
}


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
@pytest.mark.parametrize(
    ("entity", "text"),
    [(Model, text) for text in MODEL_FILTERS] + [(Version, text) for text in VERSION_FILTERS],
)
def test_compiles(dialect: Any, entity: Any, text: str) -> None:
    compile_filter = model_filter if entity is Model else version_filter
    compiled = sa.select(entity).where(compile_filter(text)).compile(dialect=dialect)
    sql = str(compiled)
    # Values only ever travel as bound parameters.
    assert SENTINEL not in sql
    if "metadata" in text:
        function = {"postgresql": "json_typeof"}.get(dialect.name, "json_type")
        assert function in sql


def test_json_paths_compile_per_dialect() -> None:
    expr = version_filter("metadata.metrics.auc > 0.9")
    stmt = sa.select(Version.id).where(expr)
    pg = stmt.compile(dialect=postgresql.dialect())
    assert "#>>" in str(pg)
    assert ("metrics", "auc") in pg.params.values()
    my = stmt.compile(dialect=mysql.dialect())
    assert "JSON_EXTRACT" in str(my)
    lite = stmt.compile(dialect=sqlite.dialect())
    assert '$."metrics"."auc"' in lite.params.values()
