# ruff: noqa: RUF001 (Chinese text, full-width forms and look-alikes are the subject)
"""The 31 security risks of the national basic security requirements for generative AI services.

GB/T 45654-2025 (生成式人工智能服务安全基本要求, formerly TC260-003), Appendix A, groups the main
security risks of training data and generated content into five classes and 31 risks. hegui
names each risk in camelCase, which is how a `GenerativeService` refers to it
(`spec.moderation.categories[].name`), a keyword file tags a keyword and a classifier labels its
scores. Each risk carries the clause of Article 4 of the Interim Measures it serves, so every
block, mask or flag can cite its article.

The five classes have names too (`RISK_CLASSES`): a posture or keyword file may name a whole class
(`discrimination` covers the nine risks of A.2). `discrimination` and `commercialViolation` were
hegui's category names before the 31 risks were split out, so they keep working as class names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RiskCategory:
    name: str  # camelCase, as in GenerativeService.spec.moderation.categories[].name
    tc260: str  # the clause of Appendix A, e.g. A.1(a)
    article: str  # the clause of the Interim Measures it serves
    title: str

    @property
    def risk_class(self) -> str:
        """The class of Appendix A the risk belongs to, e.g. A.1."""
        return self.tc260.split("(", 1)[0]


@dataclass(frozen=True)
class RiskClass:
    name: str
    clause: str  # A.1 .. A.5
    article: str
    title: str
    members: tuple[str, ...]


_ALL = (
    # A.1 违反社会主义核心价值观的内容 (Art.4(1))
    RiskCategory("subversion", "A.1(a)", "Art.4(1)", "煽动颠覆国家政权、推翻社会主义制度"),
    RiskCategory("nationalSecurity", "A.1(b)", "Art.4(1)", "危害国家安全和利益、损害国家形象"),
    RiskCategory("separatism", "A.1(c)", "Art.4(1)", "煽动分裂国家、破坏国家统一和社会稳定"),
    RiskCategory("terrorismExtremism", "A.1(d)", "Art.4(1)", "宣扬恐怖主义、极端主义"),
    RiskCategory("ethnicHatred", "A.1(e)", "Art.4(1)", "宣扬民族仇恨"),
    RiskCategory("violenceObscenity", "A.1(f)", "Art.4(1)", "宣扬暴力、淫秽色情"),
    RiskCategory("falseInformation", "A.1(g)", "Art.4(1)", "传播虚假有害信息"),
    RiskCategory("otherProhibited", "A.1(h)", "Art.4(1)", "其他法律、行政法规禁止的内容"),
    # A.2 歧视性内容 (Art.4(2))
    RiskCategory("ethnicDiscrimination", "A.2(a)", "Art.4(2)", "民族歧视内容"),
    RiskCategory("beliefDiscrimination", "A.2(b)", "Art.4(2)", "信仰歧视内容"),
    RiskCategory("nationalityDiscrimination", "A.2(c)", "Art.4(2)", "国别歧视内容"),
    RiskCategory("regionalDiscrimination", "A.2(d)", "Art.4(2)", "地域歧视内容"),
    RiskCategory("genderDiscrimination", "A.2(e)", "Art.4(2)", "性别歧视内容"),
    RiskCategory("ageDiscrimination", "A.2(f)", "Art.4(2)", "年龄歧视内容"),
    RiskCategory("occupationDiscrimination", "A.2(g)", "Art.4(2)", "职业歧视内容"),
    RiskCategory("healthDiscrimination", "A.2(h)", "Art.4(2)", "健康歧视内容"),
    RiskCategory("otherDiscrimination", "A.2(i)", "Art.4(2)", "其他方面歧视内容"),
    # A.3 商业违法违规 (Art.4(3))
    RiskCategory("intellectualProperty", "A.3(a)", "Art.4(3)", "侵犯他人知识产权"),
    RiskCategory("businessEthics", "A.3(b)", "Art.4(3)", "违反商业道德"),
    RiskCategory("tradeSecrets", "A.3(c)", "Art.4(3)", "泄露他人商业秘密"),
    RiskCategory("unfairCompetition", "A.3(d)", "Art.4(3)",
                 "利用算法、数据、平台等优势，实施垄断和不正当竞争行为"),
    RiskCategory("otherCommercialViolation", "A.3(e)", "Art.4(3)", "其他商业违法违规行为"),
    # A.4 侵犯他人合法权益 (Art.4(4))
    RiskCategory("physicalMentalHealth", "A.4(a)", "Art.4(4)", "危害他人身心健康"),
    RiskCategory("portraitRights", "A.4(b)", "Art.4(4)", "侵害他人肖像权"),
    RiskCategory("reputationRights", "A.4(c)", "Art.4(4)", "侵害他人名誉权"),
    RiskCategory("honourRights", "A.4(d)", "Art.4(4)", "侵害他人荣誉权"),
    RiskCategory("privacyRights", "A.4(e)", "Art.4(4)", "侵害他人隐私权"),
    RiskCategory("personalInformation", "A.4(f)", "Art.4(4)", "侵害他人个人信息权益"),
    RiskCategory("otherRights", "A.4(g)", "Art.4(4)", "侵犯他人其他合法权益"),
    # A.5 无法满足特定服务类型的安全需求 (Art.4(5): accuracy and reliability)
    RiskCategory("inaccurateContent", "A.5(a)", "Art.4(5)",
                 "内容不准确，严重不符合科学常识或主流认知"),
    RiskCategory("unreliableContent", "A.5(b)", "Art.4(5)",
                 "内容不可靠，虽然不包含严重错误的内容，但无法对使用者形成帮助"),
)

#: The 31 risks, by name.
CATEGORIES: dict[str, RiskCategory] = {c.name: c for c in _ALL}


def _class(name: str, clause: str, article: str, title: str) -> RiskClass:
    return RiskClass(name, clause, article, title,
                     tuple(c.name for c in _ALL if c.risk_class == clause))


#: The five classes of Appendix A, by name; a class name stands for all its risks.
RISK_CLASSES: dict[str, RiskClass] = {c.name: c for c in (
    _class("coreValues", "A.1", "Art.4(1)", "违反社会主义核心价值观的内容"),
    _class("discrimination", "A.2", "Art.4(2)", "歧视性内容"),
    _class("commercialViolation", "A.3", "Art.4(3)", "商业违法违规"),
    _class("legitimateRights", "A.4", "Art.4(4)", "侵犯他人合法权益"),
    _class("serviceSecurity", "A.5", "Art.4(5)", "无法满足特定服务类型的安全需求"),
)}

#: The category personal-information detection reports under.
PERSONAL_INFORMATION = "personalInformation"

#: The risks a keyword library must cover (A.1 and A.2: 17 risks).
KEYWORD_RISKS: tuple[str, ...] = tuple(c.name for c in _ALL if c.risk_class in ("A.1", "A.2"))


def is_known(name: str) -> bool:
    """Whether `name` is one of the 31 risks or one of the five classes."""
    return name in CATEGORIES or name in RISK_CLASSES


def risks_of(name: str) -> tuple[str, ...]:
    """The risks a name stands for: itself for a risk, its members for a class, () if unknown."""
    if name in CATEGORIES:
        return (name,)
    known = RISK_CLASSES.get(name)
    return known.members if known else ()


def covers(declared: str, reported: str) -> bool:
    """Whether a posture's category `declared` applies to findings reported under `reported`:
    the same name, or a class and one of its risks either way round."""
    if declared == reported:
        return True
    return bool(set(risks_of(declared)) & set(risks_of(reported))) and (
        declared in RISK_CLASSES or reported in RISK_CLASSES)


def article_of(category: str, declared: str | None = None) -> str:
    """The article a decision on `category` cites: the one the posture declares, else ours."""
    if declared:
        return declared
    known = CATEGORIES.get(category)
    if known:
        return known.article
    group = RISK_CLASSES.get(category)
    return group.article if group else "Art.4(1)"
