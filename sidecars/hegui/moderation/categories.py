"""Risk categories of the national basic security requirements for generative AI services.

TC260-003 (生成式人工智能服务安全基本要求), Appendix A, groups the main security risks into five
classes; hegui names each sub-category in camelCase, which is how a `GenerativeService` refers to
it (`spec.moderation.categories[].name`). Each category carries the clause of the Interim
Measures it serves, so every block, mask or flag can cite its article.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RiskCategory:
    name: str  # camelCase, as in GenerativeService.spec.moderation.categories[].name
    tc260: str  # the clause of TC260-003 Appendix A
    article: str  # the clause of the Interim Measures it serves
    title: str


_ALL = (
    # A.1 违反社会主义核心价值观的内容
    RiskCategory("subversion", "A.1(a)", "Art.4(1)", "煽动颠覆国家政权、推翻社会主义制度"),
    RiskCategory("nationalSecurity", "A.1(b)", "Art.4(1)", "危害国家安全和利益、损害国家形象"),
    RiskCategory("separatism", "A.1(c)", "Art.4(1)", "煽动分裂国家、破坏国家统一和社会稳定"),
    RiskCategory("terrorismExtremism", "A.1(d)", "Art.4(1)", "宣扬恐怖主义、极端主义"),
    RiskCategory("ethnicHatred", "A.1(e)", "Art.4(1)", "宣扬民族仇恨、民族歧视"),
    RiskCategory("violenceObscenity", "A.1(f)", "Art.4(1)", "宣扬暴力、淫秽色情"),
    RiskCategory("falseInformation", "A.1(g)", "Art.4(1)", "传播虚假有害信息"),
    # A.2 歧视性内容
    RiskCategory("discrimination", "A.2", "Art.4(2)", "民族、信仰、国别、地域、性别等歧视"),
    # A.3 商业违法违规
    RiskCategory("commercialViolation", "A.3", "Art.4(3)", "侵犯知识产权、违反商业道德"),
    # A.4 侵犯他人合法权益
    RiskCategory("portraitRights", "A.4(b)", "Art.4(4)", "侵害他人肖像权"),
    RiskCategory("reputationRights", "A.4(c)", "Art.4(4)", "侵害他人名誉权、荣誉权"),
    RiskCategory("personalInformation", "A.4(e)", "Art.4(4)", "侵害他人个人信息权益"),
)

CATEGORIES: dict[str, RiskCategory] = {c.name: c for c in _ALL}

#: The category personal-information detection reports under.
PERSONAL_INFORMATION = "personalInformation"


def article_of(category: str, declared: str | None = None) -> str:
    """The article a decision on `category` cites: the one the posture declares, else ours."""
    if declared:
        return declared
    known = CATEGORIES.get(category)
    return known.article if known else "Art.4(1)"
