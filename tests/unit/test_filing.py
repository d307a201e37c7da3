"""Filing numbers: published numbers are accepted, near misses get a message that says the fix.

Sources of the accepted vectors. These are numbers providers display publicly next to their
services, collected as quoted in public documentation and source code (the CAC's own lists on
beian.cac.gov.cn and cac.gov.cn could not be reached from here, so the vectors were not checked
against them one by one):

* Algorithm filings (算法备案):
  - 网信算备110108823483901230031号, ...0011号, ...0057号: ByteDance's Doubao models and speech
    algorithms (doubao.com/legal/instructions, linking the CAC announcement of 2023-09-01).
  - 网信算备330110507206401230035号 and ...0027号: Alibaba DAMO Academy (Hangzhou), Tongyi Qianwen
    and Wanxiang; 网信算备330106003156001240091号: Wanxiang video; 网信算备110108970550101240011号:
    DeepSeek (Alibaba Cloud Model Studio, "模型备案信息公示").
  - 网信算备310115124334401240013号 (Shanghai Pudong), 网信算备610102726918801240017号 (Xi'an),
    网信算备330109830471102220013号, ...103220019号, ...104220015号 (one Hangzhou provider's
    algorithms 02, 03, 04 filed in 2022): site footers.
* Generative AI service filings (生成式人工智能服务备案号): Beijing-YunQue-20230821 (Doubao),
  Beijing-WenXinYiYan-20230821 (ERNIE Bot), Beijing-ChatGLM-20230821, Beijing-MoonShot-20231016,
  ZheJiang-TongYiQianWen-20230901, Beijing-DeepseekChat-202404280016,
  Shanghai-TongYiWanXiang-202410090024, Shanghai-MiniMax-202505230046,
  Jiangsu-CarrotAI-202407030002 (provider pages and app disclosures).
* Registrations (生成式人工智能服务登记号 / 上线编号): Guangdong-Plaud-20251229S0027,
  Guangdong-FigCraft-20260817S0078 (Guangdong registrations shown in product footers).
* The near miss 京网信备11010519322986960019号 is a real blockchain service filing (区块链信息服务
  备案), which people confuse with the AI filings.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.api.filing import (
    ALGORITHM_NUMBER_PATTERN,
    SERVICE_NUMBER_PATTERN,
    FilingNumberError,
    ServiceFilingKind,
    check_algorithm_filing_number,
    check_service_filing_number,
    parse_algorithm_filing_number,
    parse_service_filing_number,
)

PUBLISHED_ALGORITHM_NUMBERS = [
    "网信算备110108823483901230031号",
    "网信算备110108823483901230011号",
    "网信算备110108823483901230057号",
    "网信算备330110507206401230035号",
    "网信算备330110507206401230027号",
    "网信算备330106003156001240091号",
    "网信算备110108970550101240011号",
    "网信算备310115124334401240013号",
    "网信算备610102726918801240017号",
    "网信算备330109830471102220013号",
    "网信算备330109830471103220019号",
    "网信算备330109830471104220015号",
]

PUBLISHED_SERVICE_NUMBERS = [
    ("Beijing-YunQue-20230821", ServiceFilingKind.FILED),
    ("Beijing-WenXinYiYan-20230821", ServiceFilingKind.FILED),
    ("Beijing-ChatGLM-20230821", ServiceFilingKind.FILED),
    ("Beijing-MoonShot-20231016", ServiceFilingKind.FILED),
    ("ZheJiang-TongYiQianWen-20230901", ServiceFilingKind.FILED),
    ("Beijing-DeepseekChat-202404280016", ServiceFilingKind.FILED),
    ("Shanghai-TongYiWanXiang-202410090024", ServiceFilingKind.FILED),
    ("Shanghai-MiniMax-202505230046", ServiceFilingKind.FILED),
    ("Jiangsu-CarrotAI-202407030002", ServiceFilingKind.FILED),
    ("Guangdong-Plaud-20251229S0027", ServiceFilingKind.REGISTERED),
    ("Guangdong-FigCraft-20260817S0078", ServiceFilingKind.REGISTERED),
]


@pytest.mark.parametrize("number", PUBLISHED_ALGORITHM_NUMBERS)
def test_published_algorithm_numbers_are_accepted(number: str) -> None:
    assert check_algorithm_filing_number(number) is None
    assert re.fullmatch(ALGORITHM_NUMBER_PATTERN, number)


def test_algorithm_number_is_parsed_into_its_parts() -> None:
    parsed = parse_algorithm_filing_number("网信算备330109830471103220019号")
    assert (parsed.region_code, parsed.provider_code, parsed.algorithm_serial, parsed.year,
            parsed.serial) == ("330109", "8304711", "03", 2022, "0019")
    assert parsed.province == "Zhejiang"


@pytest.mark.parametrize(("number", "kind"), PUBLISHED_SERVICE_NUMBERS)
def test_published_service_numbers_are_accepted(number: str, kind: ServiceFilingKind) -> None:
    assert check_service_filing_number(number) is None
    assert re.fullmatch(SERVICE_NUMBER_PATTERN, number)
    assert parse_service_filing_number(number).kind is kind


def test_service_number_is_parsed_into_its_parts() -> None:
    parsed = parse_service_filing_number("ZheJiang-TongYiQianWen-20230901")
    assert (parsed.province, parsed.service_name, parsed.date, parsed.serial) == (
        "Zhejiang", "TongYiQianWen", date(2023, 9, 1), None)
    registered = parse_service_filing_number("Guangdong-Plaud-20251229S0027")
    assert (registered.serial, registered.kind) == ("0027", ServiceFilingKind.REGISTERED)


ALGORITHM_NEAR_MISSES = [
    ("网信算备110108823483901230031", "must end with 号"),
    ("网信算备 110108823483901230031号", "contains whitespace"),
    ("网信算备110108823483901230031号 ", "contains whitespace"),
    ("网信算备１１０１０８８２３４８３９０１２３００３１号", "full-width digits"),
    ("網信算備110108823483901230031号", "traditional characters"),
    ("网信备110108823483901230031号", "must start with 网信算备"),
    ("京网信备11010519322986960019号", "blockchain information service"),
    ("京ICP备2022016840号-34", "ICP filing"),
    ("京公网安备11010802038645号", "public security filing"),
    ("Beijing-YunQue-20230821", "put it in spec.filing.service.number"),
    ("网信算备11010882348390123003号", "has 20 digits"),
    ("网信算备1101088234839012300311号", "has 22 digits"),
    ("网信算备11010882348390123003X号", "only the digits 0-9"),
    ("网信算备910108823483901230031号", "not in a mainland province-level division"),
    ("网信算备710108823483901230031号", "not in a mainland province-level division"),
    ("网信算备110108823483901210031号", "year digits 21"),
    ("", "is empty"),
]


@pytest.mark.parametrize(("number", "expected"), ALGORITHM_NEAR_MISSES)
def test_algorithm_near_misses_say_what_is_wrong(number: str, expected: str) -> None:
    error = check_algorithm_filing_number(number)
    assert error is not None
    assert expected in error.message
    text = str(error)
    assert text.startswith("spec.filing.algorithm.number: ")
    assert "rule filing.algorithmNumber" in text and "Art.17" in text
    assert not re.fullmatch(ALGORITHM_NUMBER_PATTERN, number)


SERVICE_NEAR_MISSES = [
    ("京网信备11010519322986960019号", "blockchain information service"),
    ("网信算备110108823483901230031号", "put it in spec.filing.algorithm.number"),
    ("Beijing-YunQue-2023-08-21", "write it as YYYYMMDD"),
    ("Beijing YunQue 20230821", "contains whitespace"),
    ("Beijing\uff0dYunQue\uff0d20230821", "full-width"),  # full-width hyphens
    ("Beijing-云雀-20230821", "must be ASCII"),
    ("Peking-YunQue-20230821", "not a mainland province-level division"),
    ("Beijing-Yun_Que-20230821", "service name"),
    ("Beijing-YunQue", "three parts"),
    ("Beijing-YunQue-20231321", "not a calendar date"),
    ("Beijing-YunQue-20230229", "not a calendar date"),
    ("Beijing-YunQue-20230301", "before the Interim Measures came into force"),
    ("Beijing-YunQue-20230821001", "4-digit serial"),
    ("Guangdong-Plaud-20251229S", "registration serial"),
    ("Guangdong-Plaud-20251229R0027", "registration serial"),
]


@pytest.mark.parametrize(("number", "expected"), SERVICE_NEAR_MISSES)
def test_service_near_misses_say_what_is_wrong(number: str, expected: str) -> None:
    error = check_service_filing_number(number)
    assert error is not None
    assert expected in error.message
    assert str(error).startswith("spec.filing.service.number: ")
    assert "rule filing.serviceNumber" in str(error) and "Art.17" in str(error)
    assert not re.fullmatch(SERVICE_NUMBER_PATTERN, number)


def test_parse_raises_with_the_same_error() -> None:
    with pytest.raises(FilingNumberError, match="must end with 号") as raised:
        parse_algorithm_filing_number("网信算备110108823483901230031", field="x.number")
    assert raised.value.error.field == "x.number"


def test_the_date_pattern_admits_exactly_the_calendar_dates_since_the_measures() -> None:
    # The CEL rule cannot call a date parser, so its pattern spells out the calendar, leap days
    # included; it must agree with Python's calendar on every day from 2020 to 2100.
    day = date(2020, 1, 1)
    while day <= date(2100, 12, 31):
        number = f"Beijing-YunQue-{day:%Y%m%d}"
        expected = date(2023, 8, 15) <= day <= date(2099, 12, 31)
        assert bool(re.fullmatch(SERVICE_NUMBER_PATTERN, number)) is expected, number
        day += timedelta(days=1)
    for impossible in ("20240230", "20250229", "20230931", "20240431", "20241300", "20240100"):
        assert not re.fullmatch(SERVICE_NUMBER_PATTERN, f"Beijing-YunQue-{impossible}")


_NEAR = st.sampled_from(PUBLISHED_ALGORITHM_NUMBERS + [n for n, _ in PUBLISHED_SERVICE_NUMBERS])


@settings(max_examples=300, deadline=None)
@given(_NEAR, st.integers(0, 40), st.sampled_from(["delete", "insert", "replace"]),
       st.characters(codec="utf-8"))
def test_python_checks_and_cel_patterns_agree(base: str, position: int, edit: str,
                                              char: str) -> None:
    # The apiserver only has the pattern; Python's detailed checks must accept exactly the same.
    position %= len(base) + 1
    if edit == "delete":
        text = base[:position] + base[position + 1:]
    elif edit == "insert":
        text = base[:position] + char + base[position:]
    else:
        text = base[:position] + char + base[position + 1:]
    assert (check_algorithm_filing_number(text) is None) == bool(
        re.fullmatch(ALGORITHM_NUMBER_PATTERN, text))
    assert (check_service_filing_number(text) is None) == bool(
        re.fullmatch(SERVICE_NUMBER_PATTERN, text))
