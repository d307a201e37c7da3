"""Content moderation rules shared by the Triton models and the sidecar (Art.4, Art.14).

One piece of code per rule: the Triton Python-backend models in `sidecars/triton/models/` import
this package, and the unit tests test it directly, so what is tested is what is served.

- `hegui.moderation.categories`: the risk categories (TC260-003, Appendix A) and their articles.
- `hegui.moderation.lexicon`: multi-pattern keyword matching (Aho-Corasick).
- `hegui.moderation.pii`: personal information (resident ID, mobile, bank card, e-mail) spans.
"""
