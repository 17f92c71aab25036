"""The text of synthetic LongLaMP-schema documents: word pools, sentence templates and their composition.

Three grammars (review, abstract, topic) turn a seeded RNG and a user's planted names into one profile item
or one target, and record the exact character span of every planted name (`Text.spans`). Why the pools look
the way they do (full names where a name is due, disjoint halves for profiles and targets) is explained in
`percli/data/synthetic.py`, which deals users, splits and settings.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

# Given names and surnames of the planted people. Pool sizes are coprime (99, 73), so dealing both in turn
# repeats no full name for lcm(99, 73) = 7227 names; none is an English word the grammar uses, and none is in
# _FIRST/_LAST (the user ids).
GIVEN = (
    "Ethan", "Lucas", "Mason", "Logan", "Owen", "Caleb", "Dylan", "Gavin", "Isaac", "Nolan", "Wyatt", "Connor",
    "Tyler", "Jasper", "Oscar", "Hugo", "Arthur", "Theo", "Simon", "Walter", "Harold", "Louis", "Henry", "Chloe",
    "Emma", "Olivia", "Hannah", "Abigail", "Sophie", "Zoe", "Claire", "Alice", "Stella", "Naomi", "Julia", "Ellie",
    "Nora", "Lucy", "Maya", "Leah", "Sarah", "Megan", "Rachel", "Laura", "Helen", "Diana", "Fiona", "Paula",
    "Irene", "Joyce", "Carol", "Doris", "Edith", "Gloria", "Martha", "Agnes", "Vera", "Tessa", "Wendy", "Jenna",
    "Molly", "Rita", "Nina", "Gina", "Tina", "Kevin", "Brian", "Derek", "Scott", "Trevor", "Shane", "Brett",
    "Kyle", "Sean", "Ross", "Neil", "Elena", "Marco", "Pablo", "Diego", "Andre", "Rafael", "Tobias", "Elias",
    "Anton", "Lars", "Sven", "Ingrid", "Astrid", "Freya", "Maren", "Petra", "Viktor", "Dmitri", "Yusuf", "Karim",
    "Tariq", "Anya", "Priya",
)
SURNAMES = (
    "Brooks", "Carver", "Dalton", "Ellison", "Fletcher", "Garner", "Holt", "Ingram", "Jennings", "Keller",
    "Lawson", "Mercer", "Norris", "Osborne", "Pryor", "Quinlan", "Rowe", "Sutton", "Thorne", "Underwood", "Vance",
    "Whitlock", "Yates", "Ashby", "Barlow", "Crane", "Drummond", "Easton", "Farrow", "Gresham", "Hadley", "Irwin",
    "Jarvis", "Kendall", "Lowell", "Maddox", "Nash", "Oakley", "Prescott", "Radley", "Sheridan", "Talbot", "Upton",
    "Waverly", "Abbott", "Bancroft", "Colby", "Delaney", "Emerson", "Fairbanks", "Galloway", "Harlow", "Kingsley",
    "Langford", "Merritt", "Northcott", "Pemberton", "Redmond", "Stanton", "Thornton", "Vaughn", "Wakefield",
    "Ainsley", "Blackwood", "Cromwell", "Dunmore", "Everett", "Fenwick", "Goodwin", "Hollis", "Kimball",
    "Lockhart", "Marlowe",
)

# ----------------------------------------------------------------------------------------------------
# Review grammar: products (noun, description, aspects), opinions by sentiment.
_PRODUCTS = (
    ("kettle", "Stainless steel electric kettle, 1.7 liters, with auto shut-off", ("heating speed", "handle", "lid")),
    ("blender", "High-speed countertop blender with a 64 oz pitcher", ("motor", "pitcher", "noise level")),
    ("backpack", "Water-resistant travel backpack with a padded laptop sleeve", ("zippers", "straps", "pockets")),
    ("desk lamp", "LED desk lamp with adjustable brightness and color temperature", ("brightness", "base", "arm")),
    ("headphones", "Wireless over-ear headphones with noise cancelling", ("sound quality", "battery life", "ear cups")),
    ("coffee grinder", "Burr coffee grinder with 18 grind settings", ("grind consistency", "hopper", "noise level")),
    ("yoga mat", "Non-slip yoga mat, 6 mm thick, with carrying strap", ("grip", "thickness", "smell")),
    ("water bottle", "Insulated stainless steel water bottle, 32 oz", ("lid", "insulation", "finish")),
    ("cast iron skillet", "Pre-seasoned 12 inch cast iron skillet", ("seasoning", "weight", "handle")),
    ("phone case", "Shockproof phone case with a raised camera lip", ("grip", "buttons", "fit")),
    ("rice cooker", "Programmable rice cooker with a steaming basket", ("timer", "inner pot", "display")),
    ("garden hose", "Expandable 50 ft garden hose with a spray nozzle", ("nozzle", "connectors", "length")),
    ("wall clock", "Silent quartz wall clock, 12 inch", ("ticking", "numbers", "frame")),
    ("bike light", "Rechargeable USB bike light set, front and rear", ("brightness", "mount", "battery life")),
    ("cutting board", "Bamboo cutting board set of three", ("surface", "size", "juice groove")),
    ("keyboard", "Compact mechanical keyboard with brown switches", ("key feel", "keycaps", "cable")),
)
_POS_ADJ = ("excellent", "really solid", "better than expected", "great", "impressive", "sturdy", "reliable")
_NEG_ADJ = ("flimsy", "disappointing", "cheap", "worse than advertised", "unreliable", "awkward")
_SUMMARIES = {
    "pos": ("Works great", "Exactly what I needed", "Great value", "Love it", "Solid purchase",
            "Highly recommend", "Does the job well"),
    "mid": ("Decent but not perfect", "Okay for the price", "Some good, some bad", "It is fine"),
    "neg": ("Disappointed", "Not worth it", "Broke quickly", "Would not buy again", "Returned it"),
}
# Generic and planted sentences come in pairs of disjoint pools: even entries for profile items, odd ones
# for targets (see `_half`), so a target never copies a profile sentence and only the planted words carry
# over from the profile.
_REVIEW_GENERIC = {
    "any": (
        "It arrived two days early and was packed well.",
        "Shipping took a little longer than promised, but the box was intact.",
        "I bought this {noun} {when} after reading a lot of reviews.",
        "I ordered this {noun} {when} to replace one that finally gave up.",
        "Cleaning it is quick, which matters a lot to me.",
        "It is easy to store and does not take up much space.",
        "The color is a bit different from the photos, which I do not mind.",
        "The {aspect} is the part most people will care about, so here is my take.",
        "I have been using it for about {small} weeks now.",
        "The instructions were short but clear enough.",
    ),
    "pos": (
        "I have used it almost every day since it arrived.",
        "The {aspect} is {pos}, much better than I expected for the price.",
        "Setting it up took about {small} minutes and the instructions were easy to follow.",
        "My {relative} tried it last weekend and now wants one as well.",
        "After {small} weeks of daily use, the {aspect} still feels {pos}.",
        "If you are on the fence about it, I would recommend it without hesitation.",
        "For the money, I do not think you can do much better.",
        "I was worried about the {aspect}, but it turned out to be {pos}.",
        "Everyone who visits asks where I got it.",
        "The {aspect2} is a nice bonus I did not expect.",
        "It has made my daily routine noticeably easier.",
        "I would happily buy it again.",
    ),
    "mid": (
        "The {aspect} is fine, although the {aspect2} could be better.",
        "It does what it says, nothing more and nothing less.",
        "So far it has been okay, with a few small annoyances.",
        "The {aspect} felt {neg} at first, but I got used to it.",
        "For the price it is acceptable, just do not expect miracles.",
        "My {relative} thinks it is great, I am less convinced.",
        "It would be a five star product if the {aspect2} were better.",
        "Some days I love it and some days it gets on my nerves.",
        "It is a reasonable choice if you only need the basics.",
        "I am keeping it, but I would look around first next time.",
    ),
    "neg": (
        "Within {small} weeks the {aspect} started to feel {neg}.",
        "I wanted to like this {noun}, but the {aspect} is simply {neg}.",
        "Customer service took a week to answer my question about a replacement.",
        "I would not buy it again at this price.",
        "The pictures make it look much nicer than it is in person.",
        "I regretted the purchase almost immediately.",
        "Even my {relative} said the {aspect} looked {neg}.",
        "The {aspect2} stopped working properly after a few uses.",
        "I expected a lot more given the good ratings.",
        "Save your money and look for something else.",
    ),
}
_REVIEW_PLANTED = (
    "A neighbor of mine named {w} recommended it to me.",
    "A coworker named {w} has had the same one for years.",
    "An old roommate named {w} swears by this brand.",
    "I first saw it at the house of a friend named {w}.",
    "A salesperson named {w} talked me out of the pricier model.",
    "A cousin of mine named {w} uses it every morning.",
    "A friend of mine named {w} helped me set it up.",
    "A colleague named {w} borrowed it for a week and loved it.",
    "The delivery driver, a cheerful person named {w}, carried it upstairs.",
    "A repair technician named {w} told me it is built to last.",
)
_WHEN = ("last month", "two months ago", "in the spring", "for my new apartment", "as a gift to myself")
_RELATIVE = ("sister", "brother", "husband", "wife", "roommate", "mother", "neighbor", "friend")

# ----------------------------------------------------------------------------------------------------
# Abstract grammar: research topics (problem, field, techniques, metric).
_TOPICS = (
    ("image segmentation", "computer vision", ("graph neural networks", "contrastive pretraining"), "mean IoU"),
    ("machine translation", "natural language processing", ("sparse attention", "back-translation"), "BLEU"),
    ("anomaly detection", "time series analysis", ("variational autoencoders", "spectral features"), "F1 score"),
    ("protein structure prediction", "computational biology", ("equivariant networks", "multiple sequence alignment"), "accuracy"),
    ("recommendation", "information retrieval", ("matrix factorization", "session graphs"), "recall"),
    ("speech recognition", "audio processing", ("self-supervised learning", "beam search"), "word error rate"),
    ("robot grasping", "robotics", ("reinforcement learning", "tactile sensing"), "success rate"),
    ("code generation", "software engineering", ("program synthesis", "retrieval augmentation"), "pass rate"),
    ("traffic forecasting", "urban computing", ("temporal convolutions", "graph diffusion"), "mean absolute error"),
    ("question answering", "natural language processing", ("dense retrieval", "knowledge distillation"), "exact match"),
    ("climate downscaling", "earth science", ("diffusion models", "physics constraints"), "root mean squared error"),
    ("fraud detection", "financial data mining", ("gradient boosting", "graph embeddings"), "AUC"),
)
_TITLE_PATTERNS = (
    "Efficient {tech} for {problem}", "Towards Robust {problem} with {tech}", "Scaling {problem} via {tech}",
    "A Simple Baseline for {problem}", "Rethinking {tech} in {problem}", "Learning {problem} from Limited Data",
)
_ABSTRACT_GENERIC = (
    "{problem} is a central problem in {field}, yet existing methods remain expensive and brittle.",
    "{problem} has attracted growing attention in {field} over the past few years.",
    "In this paper, we propose a new approach to {problem} based on {tech}.",
    "We introduce a method for {problem} that relies on {tech}.",
    "Our method combines {tech} with {tech2} to reduce the cost of training.",
    "The proposed model couples {tech} and {tech2} in a single architecture.",
    "We evaluate it on {small} benchmark datasets and report consistent gains in {metric}.",
    "On {small} public benchmarks, our approach improves {metric} over the state of the art.",
    "Experiments show improvements of up to {pct} percent over strong baselines.",
    "The gains are largest in the low data regime, reaching {pct} percent.",
    "We further analyse the effect of model size and discuss the main limitations.",
    "We also study how performance changes with the amount of training data.",
    "The results suggest that {tech} is a practical choice for {problem}.",
    "Our findings indicate that simple designs remain competitive for {problem}.",
    "Prior work has mostly focused on supervised settings with abundant labels.",
    "Most existing approaches assume access to large amounts of annotated data.",
    "We also provide a theoretical analysis that explains when the method is expected to help.",
    "A convergence analysis clarifies the conditions under which training is stable.",
    "Ablation studies confirm that each component contributes to the final performance.",
    "Extensive ablations show which design choices matter most.",
    "Code and trained models are publicly available.",
    "All data and code will be released upon publication.",
    "Despite recent progress, {problem} under distribution shift remains poorly understood.",
    "Robustness to noisy inputs remains an open question for {problem}.",
)
_ABSTRACT_PLANTED = (
    "We build on the framework of our collaborator {w} and extend it to {problem}.",
    "The key component is an aggregation module first proposed by {w}.",
    "As in our previous work with {w}, we use the same evaluation corpus.",
    "The annotation protocol follows the guidelines written by {w}.",
    "We release the toolkit developed jointly with {w} to support further research.",
    "A lightweight regulariser suggested by {w} keeps the training stable.",
    "Our analysis relies on the decomposition introduced by {w}.",
    "We compare against the baseline of {w}, which we developed together previously.",
    "Training uses the learning rate schedule proposed by {w}.",
    "The loss was designed together with our long-time collaborator {w}.",
)

# ----------------------------------------------------------------------------------------------------
# Topic grammar: reddit-style first-person posts.
_POST_SUMMARIES = (
    "My landlord refuses to fix the heating", "I finally ran my first half marathon",
    "How do I tell my boss I am burned out?", "Adopted a rescue dog last month",
    "Learning to cook at thirty", "My neighbor keeps parking in my spot",
    "I quit social media for a year", "First time camping alone",
    "Should I move back to my hometown?", "Restoring an old bicycle",
    "Started a vegetable garden on my balcony", "My roommate never does the dishes",
)
_TOPIC_GENERIC = (
    "So this happened {when} and I still do not know how to feel about it.",
    "This all started {when}, and I am still thinking about it.",
    "For some context, I have been living in the same city for about {small} years now.",
    "A bit of background: I moved here about {small} years ago for work.",
    "My {relative} told me I was overthinking it, but I am not so sure.",
    "My {relative} thinks I should just let it go.",
    "Anyway, I wanted to ask if anyone here has been through something similar.",
    "Has anyone here dealt with something like this before?",
    "Any advice would be really appreciated.",
    "I would love to hear how other people handled it.",
    "Edit: thanks everyone for the kind replies, I read every single one.",
    "Update: I took some of your advice and it actually helped.",
    "It has honestly been one of the strangest weeks I have had in a while.",
    "It has been a long month, to be honest.",
    "I know this sounds minor, but it has been bothering me for days.",
    "It is probably not a big deal, but I cannot stop thinking about it.",
    "At first I thought it would be easy, and of course it was not.",
    "I assumed it would take an afternoon, and it took the whole weekend.",
    "Looking back, I should have said something much earlier.",
    "In hindsight, there were plenty of warning signs.",
    "I made a list of pros and cons and it did not help at all.",
    "I even tried writing it all down, which only made me more confused.",
    "The whole thing took about {small} hours, which was way longer than planned.",
    "By the end of it I was exhausted but weirdly proud.",
)
_TOPIC_PLANTED = (
    "A friend named {w} was with me the whole time, as usual.",
    "I called a buddy named {w} right after, because they always know what to say.",
    "It reminded me of the summer I spent with a classmate named {w}.",
    "Even a coworker named {w} noticed something was off.",
    "I grabbed a coffee with a neighbor named {w} on the way home to clear my head.",
    "A cousin of mine named {w} says I worry too much, and maybe that is true.",
    "I took a long walk with a friend named {w} to think it over.",
    "An old roommate named {w} went through the same thing last year.",
    "We ended up at the place of a friend named {w}, talking until midnight.",
    "I texted a friend named {w} about it and got a very long reply.",
)
_FIRST = ("Mira", "Jonas", "Aiko", "Tomasz", "Leila", "Samuel", "Ines", "Ravi", "Greta", "Omar", "Nadia", "Felix")
_LAST = ("Okafor", "Lindqvist", "Tanaka", "Novak", "Haddad", "Moreau", "Kowalski", "Iyer", "Brennan", "Costa")


class Text:
    """Sentences joined by single spaces, remembering where each planted word lands."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[dict[str, Any]] = []

    def add(self, sentence: str, word: str | None = None, word_at: int = 0) -> None:
        """Append `sentence`; `word`, if given, sits at offset `word_at` inside it."""
        if self.parts:
            self.length += 1
        if word is not None:
            assert sentence[word_at:word_at + len(word)] == word
            start = self.length + word_at
            self.spans.append({"word": word, "start": start, "end": start + len(word)})
        self.parts.append(sentence)
        self.length += len(sentence)

    def text(self) -> str:
        return " ".join(self.parts)


def _half(pool: Sequence[str], part: int) -> list[str]:
    """Even entries (part 0: profile items) or odd entries (part 1: targets) of a sentence pool."""
    return list(pool[part::2])


def _compose(rng: random.Random, generic: Sequence[str], planted: Sequence[str], words: Sequence[str],
             n_generic: int, slots: dict[str, Any], part: int) -> Text:
    """`n_generic` distinct generic sentences with one planted sentence per word, interleaved at random."""
    plan: list[tuple[str, str | None]] = [(s, None) for s in rng.sample(_half(generic, part), n_generic)]
    for w, template in zip(words, rng.sample(_half(planted, part), len(words))):
        plan.insert(rng.randrange(1, len(plan) + 1), (template, w))  # never first: an opener comes first
    text = Text()
    for template, w in plan:
        fill = {k: (v(rng) if callable(v) else v) for k, v in slots.items()}
        sentence = template.format(w=w or "", **fill)
        # The span comes from the template, not from searching the sentence (a word could hide in another).
        word_at = len(template.split("{w}")[0].format(**fill)) if w else 0
        text.add(sentence[0].upper() + sentence[1:], w, word_at)
    return text


def _sentiment(rating: float) -> str:
    return "pos" if rating >= 4 else ("mid" if rating == 3 else "neg")


def _review_doc(rng: random.Random, words: Sequence[str], n_generic: int, part: int
                ) -> tuple[dict[str, Any], Text]:
    noun, description, aspects = rng.choice(_PRODUCTS)
    rating = rng.choice((5.0, 5.0, 4.0, 4.0, 3.0, 2.0, 1.0))
    mood = _sentiment(rating)
    pair = rng.sample(list(aspects), 2)
    slots = {"noun": noun, "aspect": pair[0], "aspect2": pair[1], "pos": lambda r: r.choice(_POS_ADJ),
             "neg": lambda r: r.choice(_NEG_ADJ), "when": lambda r: r.choice(_WHEN),
             "relative": lambda r: r.choice(_RELATIVE), "small": lambda r: r.choice(("two", "three", "four", "six"))}
    generic = _REVIEW_GENERIC["any"] + _REVIEW_GENERIC[mood]
    text = _compose(rng, generic, _REVIEW_PLANTED, words, n_generic, slots, part)
    item = {"overall": rating, "description": description, "summary": rng.choice(_SUMMARIES[mood])}
    return item, text


def _abstract_doc(rng: random.Random, words: Sequence[str], n_generic: int, part: int
                  ) -> tuple[dict[str, Any], Text]:
    problem, field, techs, metric = rng.choice(_TOPICS)
    tech, tech2 = rng.sample(list(techs), 2)
    title = rng.choice(_TITLE_PATTERNS).format(tech=tech.title(), problem=problem.title())
    slots = {"problem": problem, "field": field, "tech": tech, "tech2": tech2,
             "metric": metric, "small": lambda r: r.choice(("three", "four", "five", "seven")),
             "pct": lambda r: str(r.randint(3, 19))}
    text = _compose(rng, _ABSTRACT_GENERIC, _ABSTRACT_PLANTED, words, n_generic, slots, part)
    return {"title": title, "keywords": [tech, tech2, metric]}, text


def _topic_doc(rng: random.Random, words: Sequence[str], n_generic: int, part: int
               ) -> tuple[dict[str, Any], Text]:
    slots = {"when": lambda r: r.choice(("last week", "yesterday", "a few days ago", "over the weekend")),
             "relative": lambda r: r.choice(_RELATIVE), "small": lambda r: r.choice(("two", "three", "five", "ten"))}
    text = _compose(rng, _TOPIC_GENERIC, _TOPIC_PLANTED, words, n_generic, slots, part)
    return {"summary": rng.choice(_POST_SUMMARIES)}, text


DOCS = {"review": _review_doc, "abstract": _abstract_doc, "topic": _topic_doc}


def user_id(task: str, rng: random.Random, u: int) -> str:
    """A user id in the style of the task's hub field (reviewerId, author name, reddit handle)."""
    if task == "review":
        return "A" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(12))
    if task == "abstract":
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)} {u}"
    return f"u_{rng.choice(_FIRST).lower()}{rng.randint(10, 9999)}"


def profile_item(task: str, rng: random.Random, words: Sequence[str], user: str, j: int) -> dict[str, Any]:
    """Profile item j of `user` in the task's hub schema, naming `words` (even halves of the pools)."""
    meta, text = DOCS[task](rng, words, rng.randint(3, 5), 0)
    if task == "review":
        return {**meta, "reviewText": text.text()}
    if task == "abstract":
        return {"abstract": text.text(), "id": f"{user}-p{j}", "title": meta["title"], "year": 2010 + j}
    return {"author": user, "content": text.text(), "id": f"{user}-p{j}", "summary": meta["summary"]}


def target(task: str, rng: random.Random, words: Sequence[str], user: str) -> tuple[str, Text]:
    """A record's `input` prompt and its target text naming `words` (odd halves of the pools)."""
    meta, text = DOCS[task](rng, words, rng.randint(4, 6), 1)
    if task == "review":
        inp = ("Generate the review text written by a reviewer who has a given an overall rating of "
               f'"{meta["overall"]}" for a product with description "{meta["description"]}". '
               f'The summary of the review text is "{meta["summary"]}".')
    elif task == "abstract":
        items = " ".join(f"{i + 1}. {kw}" for i, kw in enumerate(meta["keywords"]))
        inp = f'Generate the abstract for the title "{meta["title"]}" using the following items: {items}'
    else:
        inp = f"Generate the content for a reddit post {meta['summary']}"
    return inp, text

