"""Filing numbers (备案号) as the Cyberspace Administration of China issues them.

Two kinds of number matter for a generative AI service:

* **Algorithm filing** (算法备案), under the algorithm-recommendation rules Art.17 points to. The
  filing system (互联网信息服务算法备案系统, beian.cac.gov.cn) issues numbers of the form
  `网信算备` + 21 digits + `号`, e.g. `网信算备110108823483901230031号`. Comparing published numbers
  shows the digits' structure: a 6-digit administrative division code (GB/T 2260, e.g. 110108 =
  Beijing Haidian), a 7-digit code of the provider, a 2-digit serial of the provider's algorithm
  (01, 02, ... for the same provider), the 2-digit year of filing (22 for 2022, when the system
  opened) and a 4-digit serial.
* **Generative AI service filing or registration** (生成式人工智能服务备案 / 登记), under the
  Interim Measures themselves: the provincial cyberspace office publishes
  `Province-ServiceName-Date`, the province and the name in pinyin, e.g.
  `Beijing-YunQue-20230821`; numbers issued since 2024 append a 4-digit serial
  (`Beijing-DeepseekChat-202404280016`), and registrations (登记) of services that call a filed
  model through its API append `S` and a serial
  (`Guangdong-Plaud-20251229S0027`, the "上线编号" a registered service must display).

The formats were derived from numbers that providers publicly display next to their services
(the test vectors in tests/unit/test_filing.py name each source); they are not a published
specification, so the checks are exactly as strict as the evidence. The same regular expressions
are compiled into the CRDs' CEL rules, so the apiserver and Python accept the same numbers; the
Python checks add a precise message for each near miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

ARTICLE = "Art.17"
ALGORITHM_PREFIX = "网信算备"
MEASURES_IN_FORCE = date(2023, 8, 15)

#: GB/T 2260 province-level division codes (the first two digits of a region code) of the
#: mainland, where the CAC's filing system issues numbers.
PROVINCE_CODES: dict[str, str] = {
    "11": "Beijing", "12": "Tianjin", "13": "Hebei", "14": "Shanxi", "15": "Neimenggu",
    "21": "Liaoning", "22": "Jilin", "23": "Heilongjiang", "31": "Shanghai", "32": "Jiangsu",
    "33": "Zhejiang", "34": "Anhui", "35": "Fujian", "36": "Jiangxi", "37": "Shandong",
    "41": "Henan", "42": "Hubei", "43": "Hunan", "44": "Guangdong", "45": "Guangxi",
    "46": "Hainan", "50": "Chongqing", "51": "Sichuan", "52": "Guizhou", "53": "Yunnan",
    "54": "Xizang", "61": "Shaanxi", "62": "Gansu", "63": "Qinghai", "64": "Ningxia",
    "65": "Xinjiang",
}
#: Pinyin province names as the service filing numbers spell them; capitalisation varies in
#: published numbers (`ZheJiang-TongYiQianWen-20230901`, `Jiangsu-CarrotAI-202407030002`).
PROVINCES: tuple[str, ...] = tuple(PROVINCE_CODES.values())

# --- the canonical patterns (unanchored; CEL anchors them with ^...$, Python uses fullmatch) ---

_PROVINCE_CODE_RE = "(" + "|".join(
    f"{tens}[{''.join(sorted(c[1] for c in PROVINCE_CODES if c[0] == tens))}]"
    for tens in sorted({c[0] for c in PROVINCE_CODES})) + ")"
#: 网信算备 + region (6) + provider (7) + algorithm serial (2) + year 22..99 (2) + serial (4) + 号
ALGORITHM_NUMBER_PATTERN = (f"{ALGORITHM_PREFIX}{_PROVINCE_CODE_RE}[0-9]{{4}}[0-9]{{7}}[0-9]{{2}}"
                            "(2[2-9]|[3-9][0-9])[0-9]{4}号")

_DAY_31 = "(0[1-9]|[12][0-9]|3[01])"
_DAY_30 = "(0[1-9]|[12][0-9]|30)"
_MONTH_DAY = f"((0[13578]|1[02]){_DAY_31}|(0[469]|11){_DAY_30}|02(0[1-9]|1[0-9]|2[0-8]))"
# Dates from 2023-08-15, when the Measures came into force, to 2099-12-31, leap days included.
_DATE_RE = ("(2023(08(1[5-9]|2[0-9]|3[01])|09" + _DAY_30 + "|10" + _DAY_31 + "|11" + _DAY_30
            + "|12" + _DAY_31 + ")"
            + "|20(2[4-9]|[3-9][0-9])" + _MONTH_DAY
            + "|20(2[48]|[468][048]|[3579][26])0229)")
SERVICE_NUMBER_PATTERN = ("(?i:" + "|".join(p.lower() for p in PROVINCES) + ")"
                          + "-[A-Za-z0-9]{1,64}-" + _DATE_RE + "([0-9]{4}|S[0-9]{4})?")

_ALGORITHM_RE = re.compile(ALGORITHM_NUMBER_PATTERN)
_SERVICE_RE = re.compile(SERVICE_NUMBER_PATTERN)

ALGORITHM_EXAMPLE = "网信算备110108823483901230031号"
SERVICE_EXAMPLE = "Beijing-YunQue-20230821"

ALGORITHM_FIELD = "spec.filing.algorithm.number"
SERVICE_FIELD = "spec.filing.service.number"
ALGORITHM_RULE = "filing.algorithmNumber"
SERVICE_RULE = "filing.serviceNumber"


@dataclass(frozen=True)
class FilingError:
    """Why a filing number is not valid: the field, the rule, the article and the fix."""

    field: str
    rule: str
    article: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} (rule {self.rule}, {self.article})"

    @property
    def short(self) -> str:
        """The message without the field, for validators whose caller names the field."""
        return f"{self.message} (rule {self.rule}, {self.article})"


class FilingNumberError(ValueError):
    def __init__(self, error: FilingError) -> None:
        self.error = error
        super().__init__(str(error))


class ServiceFilingKind(StrEnum):
    """Whether a generative AI service number records a filing or a registration."""

    FILED = "Filed"  # 备案: a service whose own model was assessed and filed
    REGISTERED = "Registered"  # 登记: a service that calls a filed model through its API


@dataclass(frozen=True)
class AlgorithmFilingNumber:
    """A parsed algorithm filing number (算法备案号)."""

    text: str
    region_code: str
    provider_code: str
    algorithm_serial: str
    year: int
    serial: str

    @property
    def province(self) -> str:
        return PROVINCE_CODES[self.region_code[:2]]


@dataclass(frozen=True)
class ServiceFilingNumber:
    """A parsed generative AI service filing (备案号) or registration (上线编号) number."""

    text: str
    province: str
    service_name: str
    date: date
    serial: str | None
    kind: ServiceFilingKind


_FULL_WIDTH = re.compile("[\uff01-\uff5e\u3000]")
_WHITESPACE = re.compile(r"\s")
_CJK = re.compile("[\u4e00-\u9fff]")


def _error(field: str, rule: str, message: str) -> FilingError:
    return FilingError(field=field, rule=rule, article=ARTICLE, message=message)


def _other_registry(value: str) -> str | None:
    """Numbers from other Chinese registries that people paste into the wrong field."""
    if re.match("^[\u4e00-\u9fff]网信备", value):
        return ("is a blockchain information service filing number (区块链信息服务备案, "
                "…网信备…号), not a filing of a generative AI service")
    if "公网安备" in value:
        return "is a public security filing number (公安备案, …公网安备…号)"
    if "ICP" in value.upper():
        return "is an ICP filing or licence number (ICP备案), not a filing of the service"
    return None


def check_algorithm_filing_number(value: str, field: str = ALGORITHM_FIELD) -> FilingError | None:
    """None if `value` is a well-formed algorithm filing number, else what is wrong with it."""

    def fail(message: str) -> FilingError:
        return _error(field, ALGORITHM_RULE, message)

    if not value:
        return fail(f"is empty; expected an algorithm filing number such as {ALGORITHM_EXAMPLE}")
    if _WHITESPACE.search(value):
        return fail(f"contains whitespace; write the number without spaces, as in "
                    f"{ALGORITHM_EXAMPLE}")
    if re.search("[\uff10-\uff19]", value):
        return fail("uses full-width digits (０-９); write ASCII digits 0-9")  # noqa: RUF001
    if value.startswith(("網信算備", "网信算備", "網信算备")):
        return fail("is written in traditional characters; the filing system issues 网信算备")
    if re.match(r"^[A-Za-z]+-", value):
        return fail(f"looks like a generative AI service filing number ({SERVICE_EXAMPLE}); "
                    f"put it in {SERVICE_FIELD}")
    if other := _other_registry(value):
        return fail(other)
    if not value.startswith(ALGORITHM_PREFIX):
        return fail(f"must start with {ALGORITHM_PREFIX} (算法备案), as in {ALGORITHM_EXAMPLE}")
    if not value.endswith("号"):
        return fail(f"must end with 号, as in {ALGORITHM_EXAMPLE}")
    digits = value[len(ALGORITHM_PREFIX):-1]
    if not re.fullmatch("[0-9]*", digits):
        return fail(f"must have only the digits 0-9 between {ALGORITHM_PREFIX} and 号; "
                    f"found {digits!r}")
    if len(digits) != 21:
        return fail(f"has {len(digits)} digits between {ALGORITHM_PREFIX} and 号; 21 expected "
                    "(6 region code, 7 provider, 2 algorithm, 2 year, 4 serial)")
    if digits[:2] not in PROVINCE_CODES:
        return fail(f"starts with region code {digits[:6]}, which is not in a mainland "
                    "province-level division of GB/T 2260 (11..65)")
    if int(digits[15:17]) < 22:
        return fail(f"has year digits {digits[15:17]}, before the algorithm filing system "
                    "opened in 2022")
    if not _ALGORITHM_RE.fullmatch(value):  # the CEL rule's pattern: must agree with the above
        return fail(f"is not an algorithm filing number such as {ALGORITHM_EXAMPLE}")
    return None


def parse_algorithm_filing_number(value: str,
                                  field: str = ALGORITHM_FIELD) -> AlgorithmFilingNumber:
    if error := check_algorithm_filing_number(value, field):
        raise FilingNumberError(error)
    digits = value[len(ALGORITHM_PREFIX):-1]
    return AlgorithmFilingNumber(text=value, region_code=digits[:6], provider_code=digits[6:13],
                                 algorithm_serial=digits[13:15], year=2000 + int(digits[15:17]),
                                 serial=digits[17:])


def check_service_filing_number(value: str, field: str = SERVICE_FIELD) -> FilingError | None:
    """None if `value` is a well-formed generative AI service filing or registration number."""

    def fail(message: str) -> FilingError:
        return _error(field, SERVICE_RULE, message)

    if not value:
        return fail(f"is empty; expected a service filing number such as {SERVICE_EXAMPLE}")
    if _WHITESPACE.search(value):
        return fail(f"contains whitespace; write it as published, e.g. {SERVICE_EXAMPLE}")
    if _FULL_WIDTH.search(value):
        return fail("uses full-width characters (such as －, ０-９); write ASCII "  # noqa: RUF001
                    "letters, "
                    "digits and '-'")
    if value.startswith(ALGORITHM_PREFIX):
        return fail(f"is an algorithm filing number (算法备案); put it in {ALGORITHM_FIELD}")
    if other := _other_registry(value):
        return fail(other)
    if _CJK.search(value) or not value.isascii():
        return fail("must be ASCII: the province and the service name in pinyin, e.g. "
                    f"{SERVICE_EXAMPLE}")
    parts = value.split("-")
    if len(parts) == 5 and all(p.isdigit() for p in parts[2:]):
        return fail(f"writes the date with separators ({'-'.join(parts[2:])}); write it as "
                    f"YYYYMMDD, e.g. {SERVICE_EXAMPLE}")
    if len(parts) != 3:
        return fail(f"must have three parts joined by '-', Province-ServiceName-Date, e.g. "
                    f"{SERVICE_EXAMPLE}; found {len(parts)}")
    province, name, tail = parts
    if province.lower() not in {p.lower() for p in PROVINCES}:
        return fail(f"starts with {province!r}, which is not a mainland province-level "
                    "division in pinyin (e.g. Beijing, Shanghai, Guangdong)")
    if not re.fullmatch("[A-Za-z0-9]{1,64}", name):
        return fail(f"has service name {name!r}; it must be 1 to 64 pinyin or Latin letters "
                    "and digits")
    tail_match = re.fullmatch("([0-9]{8})(S?)([0-9]{4})?", tail)
    if not tail_match or (tail_match.group(2) and not tail_match.group(3)):
        return fail(f"ends with {tail!r}; expected the date YYYYMMDD, optionally followed by a "
                    "4-digit serial (202404280016) or by S and a 4-digit registration serial "
                    "(20251229S0027)")
    stamp = tail_match.group(1)
    try:
        filed = date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))
    except ValueError:
        return fail(f"has date {stamp}, which is not a calendar date (YYYYMMDD)")
    if filed < MEASURES_IN_FORCE:
        return fail(f"has date {stamp}, before the Interim Measures came into force "
                    f"({MEASURES_IN_FORCE.isoformat()})")
    if filed.year > 2099:
        return fail(f"has date {stamp}, after 2099")
    if not _SERVICE_RE.fullmatch(value):  # the CEL rule's pattern: must agree with the above
        return fail(f"is not a service filing number such as {SERVICE_EXAMPLE}")
    return None


def parse_service_filing_number(value: str, field: str = SERVICE_FIELD) -> ServiceFilingNumber:
    if error := check_service_filing_number(value, field):
        raise FilingNumberError(error)
    province, name, tail = value.split("-")
    stamp, suffix = tail[:8], tail[8:]
    canonical = next(p for p in PROVINCES if p.lower() == province.lower())
    return ServiceFilingNumber(
        text=value, province=canonical, service_name=name,
        date=date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:])),
        serial=suffix.removeprefix("S") or None,
        kind=ServiceFilingKind.REGISTERED if suffix.startswith("S") else ServiceFilingKind.FILED)
