"""Pinning configurations written as code: OkHttp (Kotlin, Java) and TrustKit (Swift, ObjC).

Each fixture under tests/data/realworld/ was written from the platform's documentation (OkHttp's
CertificatePinner docs, TrustKit's README and TSKTrustKitConfig.h). Every class has its clean
twin (imports without a warning), a file with values only known at run time (imported in part,
every left-out value named with its line and expression) and a file where nothing resolves
(exit 2). The shared constant-resolution engine (certpin.formats._code) is tested directly for
the language rules, and for staying linear on hostile input.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from _support.growth import assert_near_linear
from certpin.cli.main import main
from certpin.core.hosts import HostPattern
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions, ImportResult
from certpin.formats._code import Code
from certpin.formats._code_values import MAX_STRING, Evaluator

DATA = Path(__file__).resolve().parent.parent / "data" / "realworld"


def _b64(seed: str) -> str:
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


API = [_b64("api-leaf"), _b64("api-backup")]
CDN = [_b64("cdn-ca"), _b64("cdn-backup")]
AUTH = [_b64("auth-1"), _b64("auth-2")]
TK_API = [_b64("tk-1"), _b64("tk-2")]
TK_CDN = [_b64("tk-3"), _b64("tk-4")]
TK_ORG = [_b64("tk-5"), _b64("tk-6")]


def _import(fmt: str, name: str, data: bytes | None = None) -> ImportResult:
    raw = (DATA / name).read_bytes() if data is None else data
    return FORMATS[fmt].import_(raw, name, ImportOptions())


def _pins(result: ImportResult, key: str) -> list[str]:
    return [p.base64 for p in result.policy.domains[key].pins]


# -- clean twins ----------------------------------------------------------------------------------


def test_kotlin_constants_resolve_without_warnings() -> None:
    result = _import("okhttp-kotlin", "okhttp/PinnedClient.kt")
    assert result.warnings == ()
    assert list(result.policy.domains) == ["api.example.com", "**.cdn.example.com"]
    assert _pins(result, "api.example.com") == API  # SHA256 + "…" and a companion const
    assert _pins(result, "**.cdn.example.com") == CDN  # "**." + "…" and *arrayOf(…)


def test_java_constants_resolve_without_warnings() -> None:
    result = _import("okhttp-java", "okhttp/PinnedClient.java")
    assert result.warnings == ()
    assert list(result.policy.domains) == ["api.example.com", "*.auth.example.com"]
    assert _pins(result, "api.example.com") == API  # a String[] passed to the varargs
    assert _pins(result, "*.auth.example.com") == AUTH


@pytest.mark.parametrize("name", ["trustkit-code/AppDelegate.swift", "trustkit-code/AppDelegate.m"])
def test_trustkit_code_resolves_without_warnings(name: str) -> None:
    result = _import("trustkit-ios-code", name)
    assert result.warnings == ()
    api = result.policy.domains["api.example.com"]
    cdn = result.policy.domains["cdn.example.com"]
    assert [p.base64 for p in api.pins] == TK_API
    assert api.include_subdomains and api.enforce
    assert api.expires is not None and api.expires.date().isoformat() == "2030-01-01"
    assert [p.base64 for p in cdn.pins] == TK_CDN
    assert not cdn.enforce and not cdn.include_subdomains
    if name.endswith(".swift"):
        assert api.report_uris == ("https://reports.example.com/trustkit",)


def test_trustkit_string_keys_resolve_without_warnings() -> None:
    result = _import("trustkit-ios-code", "trustkit-code/StringKeys.swift")
    assert result.warnings == ()
    assert _pins(result, "www.example.org") == TK_ORG


@pytest.mark.parametrize(
    ("fmt", "name", "old", "key"),
    [
        ("okhttp-kotlin", "okhttp/PinnedClient.kt", API[0], "api.example.com"),
        ("okhttp-java", "okhttp/PinnedClient.java", AUTH[1], "*.auth.example.com"),
        ("trustkit-ios-code", "trustkit-code/AppDelegate.swift", TK_API[0], "api.example.com"),
        ("trustkit-ios-code", "trustkit-code/AppDelegate.m", TK_API[1], "api.example.com"),
    ],
)
def test_a_changed_constant_changes_the_import(fmt: str, name: str, old: str, key: str) -> None:
    """The failing twins: the pin comes from the constant's value, and a bad value is refused
    naming the line of the constant."""
    text = (DATA / name).read_text()
    new = _b64("replacement")
    changed = _import(fmt, name, text.replace(old, new).encode())
    assert new in _pins(changed, key) and old not in _pins(changed, key)
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if old in ln)
    with pytest.raises(FormatError, match=rf"^{name}: line {line}\b"):
        _import(fmt, name, text.replace(old, old[:20] + "!").encode())


# -- values only known at run time ----------------------------------------------------------------


def test_kotlin_runtime_values_are_named_with_line_and_expression() -> None:
    result = _import("okhttp-kotlin", "okhttp/RemotePins.kt")
    assert list(result.policy.domains) == ["api.example.com"]
    assert _pins(result, "api.example.com") == API
    text = "\n".join(result.warnings)
    for expected in (
        "line 14: pin 'BuildConfig.API_PIN_NEXT' for 'api.example.com' cannot be resolved "
        "statically (a BuildConfig field",
        "line 15: .add() pattern 'BuildConfig.CDN_HOST' cannot be resolved",
        "line 16: pin 'context.getString(R.string.auth_pin)'",
        "line 18: pin 'pin' for 'login.example.com'",
        "line 20: pin '\"sha256/${staticPin()}\"' for 'static.example.com' cannot be resolved "
        "statically (a string template with an expression)",
    ):
        assert f"okhttp/RemotePins.kt: {expected}" in text, text
    assert len(result.warnings) == 5


def test_java_runtime_values_are_named_with_line_and_expression() -> None:
    result = _import("okhttp-java", "okhttp/RemotePins.java")
    assert list(result.policy.domains) == ["api.example.com"]
    text = "\n".join(result.warnings)
    assert "line 12: pin 'rotated' for 'api.example.com'" in text  # not final
    assert "line 13: pin 'res.getString(R.string.cdn_pin)'" in text
    assert "line 13: pin 'pinFor(\"cdn\")' for 'cdn.example.com'" in text


def test_trustkit_runtime_values_are_named_with_line_and_expression() -> None:
    result = _import("trustkit-ios-code", "trustkit-code/RemoteConfig.swift")
    assert list(result.policy.domains) == ["api.example.com"]
    api = result.policy.domains["api.example.com"]
    assert [p.base64 for p in api.pins] == TK_API  # the literal and the `let` constant
    assert api.enforce  # ProcessInfo…: left out, TrustKit's default (YES) applies
    text = "\n".join(result.warnings)
    assert "RemoteConfig.swift: line 14: a pin of 'api.example.com' 'remotePin'" in text
    assert "line 16: the value of TSKEnforcePinning 'ProcessInfo.processInfo" in text
    assert "line 19: a pinned domain 'stagingHost' cannot be resolved" in text
    assert "(line 5): a value read at run time" in text  # where the constant was defined
    assert "line 23: pin 1 of 'cdn.example.com'" in text and "TrustKit needs 2" in text


@pytest.mark.parametrize(
    ("fmt", "name", "message"),
    [
        ("okhttp-kotlin", "okhttp/AllRemote.kt", r"none of the 2 .*line 5: 'BuildConfig"),
        ("trustkit-ios-code", "trustkit-code/AllRemote.m", r"no pinned domain .*line 7: 'host'"),
    ],
)
def test_nothing_resolvable_is_an_error(fmt: str, name: str, message: str) -> None:
    with pytest.raises(FormatError, match=rf"^{name}: {message}"):
        _import(fmt, name)


# -- through the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "clean", "partial", "nothing"),
    [
        ("okhttp-kotlin", "okhttp/PinnedClient.kt", "okhttp/RemotePins.kt", "okhttp/AllRemote.kt"),
        (
            "trustkit-ios-code",
            "trustkit-code/AppDelegate.m",
            "trustkit-code/RemoteConfig.swift",
            "trustkit-code/AllRemote.m",
        ),
    ],
)
def test_cli_import_exit_codes(
    fmt: str,
    clean: str,
    partial: str,
    nothing: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "pins.toml"
    assert main(["import", "--format", fmt, str(DATA / clean), "-o", str(out)]) == 0
    assert capsys.readouterr().err == "" and "api.example.com" in out.read_text()
    assert main(["import", "--format", fmt, str(DATA / partial), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "certpin: warning: " in err and "cannot be resolved statically" in err
    strict = tmp_path / "strict.toml"
    assert (
        main(["import", "--format", fmt, str(DATA / partial), "-o", str(strict), "--strict"]) == 1
    )
    assert not strict.exists()
    capsys.readouterr()
    assert main(["import", "--format", fmt, str(DATA / nothing)]) == 2
    assert f"certpin: error: {DATA / nothing}: " in capsys.readouterr().err


# -- export: Swift --------------------------------------------------------------------------------


def test_trustkit_code_export_is_swift_with_trustkit_constants() -> None:
    policy = _import("trustkit-ios-code", "trustkit-code/AppDelegate.swift").policy
    result = FORMATS["trustkit-ios-code"].export(policy, ExportOptions())
    assert result.warnings == ()
    assert "let trustKitConfig: [String: Any] = [" in result.text
    assert "kTSKPinnedDomains: [" in result.text and "kTSKPublicKeyHashes: [" in result.text
    assert '"TSKPinnedDomains"' not in result.text
    back = FORMATS["trustkit-ios-code"].import_(result.text.encode(), "T.swift", ImportOptions())
    assert back.policy == policy and back.warnings == ()


# -- OkHttp 3/4 host patterns (item 9) -----------------------------------------------------------


def _kotlin_add(pattern: str) -> bytes:
    pins = f'"sha256/{API[0]}", "sha256/{API[1]}"'
    return f'CertificatePinner.Builder().add("{pattern}", {pins})'.encode()


@pytest.mark.parametrize(
    ("pattern", "host", "pinned"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "example.com", False),  # exactly one label: not the apex
        ("*.example.com", "a.b.example.com", False),
        ("**.example.com", "example.com", True),  # OkHttp 4.3+: zero or more labels
        ("**.example.com", "a.b.example.com", True),
        ("**.example.com", "badexample.com", False),
    ],
)
def test_imported_okhttp_patterns_keep_okhttp_semantics(
    pattern: str, host: str, pinned: bool
) -> None:
    policy = _import("okhttp-kotlin", "P.kt", _kotlin_add(pattern)).policy
    assert (policy.lookup(host) is not None) is pinned
    assert HostPattern.parse(pattern).matches(host) is pinned


@pytest.mark.parametrize("pattern", ["a.*.example.com", "*example.com", "***.example.com", "**"])
def test_patterns_okhttp_throws_on_are_refused(pattern: str) -> None:
    with pytest.raises(FormatError, match=r"^P\.kt: line 1: "):
        _import("okhttp-kotlin", "P.kt", _kotlin_add(pattern))


def test_okhttp_pin_rules() -> None:
    # OkHttp refuses a pin without sha256/ or sha1/ (IllegalArgumentException): exit 2.
    bad = f'CertificatePinner.Builder().add("a.example", "{API[0]}", "{API[1]}")'.encode()
    with pytest.raises(FormatError, match="must start with 'sha256/' or 'sha1/'"):
        _import("okhttp-kotlin", "P.kt", bad)
    # okio reads the URL-safe alphabet and drops the padding: imported canonically, warned.
    url_safe = API[1].replace("/", "_").rstrip("=")
    odd = f'CertificatePinner.Builder().add("a.example", "sha256/{API[0]}", "sha256/{url_safe}")'
    result = _import("okhttp-kotlin", "P.kt", odd.encode())
    assert _pins(result, "a.example") == API
    assert any("not canonical base64" in w for w in result.warnings)
    # A placeholder pin is imported, with a warning.
    holder = (
        f'CertificatePinner.Builder().add("a.example", "sha256/{API[0]}", "sha256/{"A" * 43}=")'
    )
    assert any(
        "placeholder" in w for w in _import("okhttp-kotlin", "P.kt", holder.encode()).warnings
    )


# -- the engine: language rules -------------------------------------------------------------------


def _value(source: str, name: str, dialect: str = "jvm") -> object:
    code = Code(source, "t", dialect)  # type: ignore[arg-type]
    node = Evaluator(code).constant(name, 0)
    return node.value


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('const val X = "a\\tb\\u0041\\$"', "a\tbA$"),
        ('val H = "x"\nval X = "$H.${H}"', "x.x"),
        ('val X = ("a" + "b") + \n "c"', "abc"),
        ('static final String X = "a" + "b";', "ab"),
        ('val X = """raw"""', "a multi-line string literal"),
        ('val X = "a" ?: "b"', "an expression certpin cannot evaluate"),
        ('var X = "a"', "'X' is a var: it can change at run time"),
        (
            'val X = "a"\nfun f() { val X = "b" }',
            "'X' is defined 2 times in this file (lines 1, 2)",
        ),
        ("val X = Y\nval Y = X", "'X' refers to itself"),
        ('val X = "${f()}"', "a string template with an expression"),
        ('val X = "a".uppercase()', "a call of .uppercase()"),
        ('val X = // "b"\n  "a"', "a"),
    ],
)
def test_jvm_constants(source: str, expected: str) -> None:
    value = _value(source, "X")
    assert value == expected or expected in str(value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('let h = "x"\nlet X = "\\(h).com"', "x.com"),
        ('let X = #"a\\b"#', "a\\b"),
        ('#define X @"a" @"b"', "ab"),
        ('static NSString * const X = @"a" "b";', "ab"),
        ("#define X FOO(1)", "a call of FOO(…)"),
        ('let X = "\\(a + b)"', "a string template with an expression"),
    ],
)
def test_apple_constants(source: str, expected: str) -> None:
    value = _value(source, "X", "apple")
    assert value == expected or expected in str(value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('val x = "abc\nval y = 1', r"line 1: unterminated string literal"),
        ("val x = listOf(1, 2\n", r"line 1: unclosed '\('"),
        ("fun f() }", r"line 1: unbalanced '\}'"),
        ("\n/* a /* b */ c */", r"line 2: a /\* inside a block comment"),
        ("\n\nval c = 'ab", r"line 3: unterminated character literal"),
    ],
)
def test_the_compiler_refuses_it_so_does_the_import(source: str, message: str) -> None:
    with pytest.raises(FormatError, match=rf"^t: {message}"):
        Code(source, "t", "jvm")


def test_commented_out_constants_are_not_definitions() -> None:
    assert _value('// val X = "dead"\n/* val X = "dead" */\nval X = "live"', "X") == "live"


# -- hostile input stays linear -------------------------------------------------------------------

_PIN_LINE = f'"sha256/{API[0]}", "sha256/{API[1]}"'


_GROWTH = {
    "many constant adds": (
        "okhttp-kotlin",
        lambda n: (
            "".join(
                f'const val H{i} = "h{i}.example.com"\nconst val P{i} = "sha256/{API[0]}"\n'
                for i in range(n)
            )
            + "val p = CertificatePinner.Builder()\n"
            + "".join(f'    .add(H{i}, P{i}, "sha256/{API[1]}")\n' for i in range(n))
        ),
        300,
    ),
    "huge concatenation": (
        "okhttp-kotlin",
        lambda n: (
            'const val H = "a"'
            + ' + "b"' * n
            + f'\nval p = CertificatePinner.Builder().add("x.example", {_PIN_LINE})\n'
        ),
        4000,
    ),
    "long string concatenation": (
        "okhttp-kotlin",
        lambda n: (
            f'const val A = "{"a" * (MAX_STRING - 10)}"\nconst val H = A'
            + " + A" * n
            + f"\nval p = CertificatePinner.Builder().add(H, {_PIN_LINE})"
            + f'.add("x.example", {_PIN_LINE})\n'
        ),
        2000,
    ),
    "deep parentheses": (
        "okhttp-kotlin",
        lambda n: (
            "val p = CertificatePinner.Builder().add("
            + "(" * n
            + '"a.example"'
            + ")" * n
            + f', {_PIN_LINE}).add("x.example", {_PIN_LINE})\n'
        ),
        3000,
    ),
    "unterminated string": (
        "okhttp-java",
        lambda n: f'CertificatePinner.Builder().add("x.example", {_PIN_LINE});\n' * n + '"abc',
        500,
    ),
    "constant chain": (
        "okhttp-kotlin",
        lambda n: (
            'const val C0 = "x.example"\n'
            + "".join(f"const val C{i + 1} = C{i}\n" for i in range(n))
            + f"val p = CertificatePinner.Builder().add(C{n}, {_PIN_LINE}).add(C0, {_PIN_LINE})\n"
        ),
        1500,
    ),
    "swift domains": (
        "trustkit-ios-code",
        lambda n: (
            "let c = [kTSKPinnedDomains: [\n"
            + "".join(
                f'"h{i}.example.com": [kTSKPublicKeyHashes: ["{TK_API[0]}", "{TK_API[1]}"],'
                " kTSKDisableDefaultReportUri: true],\n"
                for i in range(n)
            )
            + "]]\n"
        ),
        300,
    ),
    "swift deep brackets": (
        "trustkit-ios-code",
        lambda n: (
            f"let junk = {'[' * n}1{']' * n}\n"
            f'let c = [kTSKPinnedDomains: ["a.example": [kTSKPublicKeyHashes: ["{TK_API[0]}", '
            f'"{TK_API[1]}"], kTSKDisableDefaultReportUri: {"(" * n}true{")" * n}]]]\n'
        ),
        3000,
    ),
    "objc adjacent literals": (
        "trustkit-ios-code",
        lambda n: (
            '#define HOST @"a"' + ' @"b"' * n + "\n"
            f'NSDictionary *c = @{{kTSKPinnedDomains: @{{@"a.example": @{{kTSKPublicKeyHashes: '
            f'@[@"{TK_API[0]}", @"{TK_API[1]}"], kTSKDisableDefaultReportUri: @YES}}}}}};\n'
        ),
        4000,
    ),
}


@pytest.mark.parametrize("case", list(_GROWTH))
def test_hostile_code_stays_linear(case: str) -> None:
    fmt, make, base = _GROWTH[case]

    def run(data: bytes) -> object:
        assert len(data) <= FORMATS[fmt].max_bytes
        try:
            return FORMATS[fmt].import_(data, "grow.in", ImportOptions())
        except FormatError:
            return None

    assert_near_linear(run, lambda n: make(n).encode(), base=base)  # type: ignore[operator]


def test_hostile_inputs_give_bounded_results() -> None:
    # The twins of the growth cases: what each gives, not only how fast.
    deep = _GROWTH["deep parentheses"][1](3000)  # type: ignore[operator]
    result = _import("okhttp-kotlin", "d.kt", deep.encode())
    assert list(result.policy.domains) == ["x.example"]
    assert any("nested more than 32 deep" in w for w in result.warnings)
    long = _GROWTH["long string concatenation"][1](50)  # type: ignore[operator]
    result = _import("okhttp-kotlin", "l.kt", long.encode())
    assert any(f"a string longer than {MAX_STRING} characters" in w for w in result.warnings)
    chain = _GROWTH["constant chain"][1](100)  # type: ignore[operator]
    result = _import("okhttp-kotlin", "c.kt", chain.encode())
    assert any("constants nested more than 32 deep" in w for w in result.warnings)
    assert (
        _import("okhttp-kotlin", "c.kt", _GROWTH["constant chain"][1](20).encode()).warnings == ()
    )  # type: ignore[operator]
    with pytest.raises(FormatError, match=r"line 11: unterminated string literal"):
        _import("okhttp-java", "u.java", _GROWTH["unterminated string"][1](10).encode())  # type: ignore[operator]


# -- which add( calls are the pinner's ------------------------------------------------------------


def test_builder_receivers_are_followed() -> None:
    pins = f'"sha256/{API[0]}", "sha256/{API[1]}"'
    source = f"""
const val PIN_A = "sha256/{API[0]}"
const val PIN_B = "sha256/{API[1]}"
val a = CertificatePinner.Builder().apply {{ add("a.example.com", PIN_A, PIN_B) }}.build()
fun configure(b: CertificatePinner.Builder) {{ b.add("b.example.com", PIN_A, PIN_B) }}
val list = mutableListOf<String>().apply {{ add("not.a.pin") }}
fun other(items: MutableList<String>) {{ items.add("c.example.com", "x") }}
val c = OkHttpClient.Builder()
    .certificatePinner(CertificatePinner.Builder().add("c.example.com", {pins}).build())
"""
    result = _import("okhttp-kotlin", "B.kt", source.encode())
    assert list(result.policy.domains) == ["a.example.com", "b.example.com", "c.example.com"]
    assert result.warnings == ()  # list.add / items.add are not the pinner's: not even warned
    # The twin: an unresolvable pin on a builder receiver is warned, naming line and expression.
    broken = source.replace('b.add("b.example.com", PIN_A, PIN_B)', 'b.add("b.example.com", p)')
    result = _import("okhttp-kotlin", "B.kt", broken.encode())
    assert "b.example.com" not in result.policy.domains
    assert any(w.startswith("B.kt: line 5: pin 'p' for 'b.example.com'") for w in result.warnings)


def test_a_second_trustkit_configuration_is_named_not_imported() -> None:
    body = f'kTSKPublicKeyHashes: ["{TK_API[0]}", "{TK_API[1]}"], kTSKDisableDefaultReportUri: true'
    source = (
        "#if DEBUG\n"
        f'let config = [kTSKPinnedDomains: ["debug.example.com": [{body}]]]\n'
        "#else\n"
        f'let config = [kTSKPinnedDomains: ["api.example.com": [{body}]]]\n'
        "#endif\n"
    )
    result = _import("trustkit-ios-code", "C.swift", source.encode())
    assert list(result.policy.domains) == ["debug.example.com"]
    assert result.warnings == (
        "C.swift: line 4: another TrustKit configuration (the first is at line 2): not imported",
    )


def test_trustkit_refusals_name_the_line() -> None:
    # TrustKit raises at start-up with one pin on an enforcing domain: exit 2, file and line.
    source = (
        'let c = [\n  kTSKPinnedDomains: [\n    "a.example": [\n'
        f'      kTSKPublicKeyHashes: ["{TK_API[0]}"]]]]'
    )
    with pytest.raises(
        FormatError,
        match=r"^S\.swift: line 4, TSKPinnedDomains\.a\.example\.TSKPublicKeyHashes: 1 distinct",
    ):
        _import("trustkit-ios-code", "S.swift", source.encode())
