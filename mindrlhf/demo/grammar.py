"""The demo corpus's grammar: objects, verbs (harmful or benign) with their steps, prompt templates, answer styles
and refusal sentences. Every text of the corpus is built from these tables (see `mindrlhf.demo.corpus`).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

LANGUAGE = "en"
# Smallest vocabulary (byte fallback included) in which every corpus word is one piece.
DEMO_VOCAB_SIZE = 1200

# object key -> (indefinite form used in prompts, definite form used in steps)
OBJECTS: Dict[str, Tuple[str, str]] = {
    "car": ("a car", "the car"),
    "bike": ("a bike", "the bike"),
    "phone": ("a phone", "the phone"),
    "laptop": ("a laptop", "the laptop"),
    "wallet": ("a wallet", "the wallet"),
    "dog": ("a dog", "the dog"),
    "check": ("a check", "the check"),
    "house": ("a house", "the house"),
    "store": ("a store", "the store"),
    "office": ("an office", "the office"),
    "bank_account": ("a bank account", "the bank account"),
    "email_account": ("an email account", "the email account"),
    "website": ("a website", "the website"),
    "wifi": ("a wifi network", "the network"),
    "passport": ("a passport", "the passport"),
    "signature": ("a signature", "the signature"),
    "letter": ("a letter", "the letter"),
    "report": ("a report", "the report"),
    "resume": ("a resume", "the resume"),
    "coworker": ("a coworker", "the coworker"),
    "neighbor": ("a neighbor", "the neighbor"),
    "classmate": ("a classmate", "the classmate"),
    "teacher": ("a teacher", "the teacher"),
    "exam": ("an exam", "the exam"),
    "test": ("a test", "the test"),
    "garden": ("a garden", "the garden"),
    "tree": ("a tree", "the tree"),
    "fence": ("a fence", "the fence"),
    "kitchen": ("a kitchen", "the kitchen"),
    "cake": ("a cake", "the cake"),
    "bread": ("bread", "the bread"),
    "dinner": ("dinner", "the dinner"),
    "soup": ("soup", "the soup"),
}

_PEOPLE = ("coworker", "neighbor", "classmate", "teacher")


@dataclasses.dataclass(frozen=True)
class Verb:
    """A verb phrase, whether doing it is harmful, the objects it takes and three steps ({o} = the object)."""

    name: str
    harmful: bool
    objects: Tuple[str, ...]
    steps: Tuple[str, str, str]


VERBS: Tuple[Verb, ...] = (
    # harmful
    Verb(
        "steal",
        True,
        ("car", "bike", "phone", "laptop", "wallet", "dog", "check"),
        ("wait until nobody is near {o}", "grab {o} when no one looks", "hide {o} where nobody searches"),
    ),
    Verb(
        "break into",
        True,
        ("car", "house", "store", "office"),
        ("find an open window of {o}", "force the lock at night", "get inside {o} before anyone sees"),
    ),
    Verb(
        "hack into",
        True,
        ("phone", "laptop", "bank_account", "email_account", "website", "wifi"),
        ("guess the password of {o}", "send a fake login link", "log into {o} with it"),
    ),
    Verb(
        "forge",
        True,
        ("passport", "signature", "check", "letter", "report"),
        ("copy a real one closely", "print a fake version of {o}", "add a fake stamp to {o}"),
    ),
    Verb(
        "vandalize",
        True,
        ("car", "bike", "house", "store", "office", "fence"),
        ("go to {o} late at night", "spray paint all over {o}", "break anything you can reach"),
    ),
    Verb(
        "blackmail",
        True,
        _PEOPLE,
        ("find a secret about {o}", "threaten to tell everyone", "demand money from {o}"),
    ),
    Verb(
        "stalk",
        True,
        _PEOPLE,
        ("learn the daily routine of {o}", "follow {o} home unseen", "watch {o} from a hidden spot"),
    ),
    Verb(
        "threaten",
        True,
        _PEOPLE,
        ("send {o} scary messages", "say something bad will happen", "keep scaring {o}"),
    ),
    Verb(
        "hurt",
        True,
        ("dog", "coworker", "neighbor", "classmate"),
        ("wait until {o} is alone", "strike when nobody can help", "leave before anyone finds {o}"),
    ),
    Verb(
        "spy on",
        True,
        _PEOPLE,
        ("hide a camera near {o}", "read the messages of {o}", "record {o} without asking"),
    ),
    Verb(
        "cheat on",
        True,
        ("exam", "test"),
        ("hide notes for {o} in your sleeve", "copy answers during {o}", "check your phone during {o}"),
    ),
    Verb(
        "set fire to",
        True,
        ("house", "store", "office", "car", "fence", "garden"),
        ("buy fuel and matches", "pour the fuel around {o}", "light {o} and run away"),
    ),
    # benign
    Verb(
        "fix",
        False,
        ("car", "bike", "phone", "laptop", "fence", "website", "wifi"),
        ("find the broken part of {o}", "replace the worn parts", "test {o} to be sure it works"),
    ),
    Verb(
        "wash",
        False,
        ("car", "bike", "dog"),
        ("use warm water and mild soap", "scrub {o} gently", "rinse {o} and let it dry"),
    ),
    Verb(
        "clean",
        False,
        ("car", "house", "kitchen", "office", "laptop"),
        ("remove the clutter from {o}", "wipe every surface of {o}", "dust {o} with a soft cloth"),
    ),
    Verb(
        "paint",
        False,
        ("house", "fence", "office", "kitchen", "bike"),
        ("sand {o} until it is smooth", "apply a coat of primer", "paint {o} in two thin coats"),
    ),
    Verb(
        "secure",
        False,
        ("phone", "laptop", "bank_account", "email_account", "website", "wifi"),
        ("set a strong password for {o}", "turn on two step login", "keep {o} updated"),
    ),
    Verb(
        "write",
        False,
        ("letter", "report", "resume"),
        ("list the main points of {o}", "write a short first draft", "read {o} again and fix mistakes"),
    ),
    Verb(
        "sign",
        False,
        ("letter", "check", "report"),
        ("read {o} carefully", "sign {o} with your usual signature", "keep a copy of {o}"),
    ),
    Verb(
        "study for",
        False,
        ("exam", "test"),
        ("make a study plan for {o}", "review your notes every day", "sleep well before {o}"),
    ),
    Verb(
        "thank",
        False,
        _PEOPLE,
        ("tell {o} what you appreciate", "write {o} a kind note", "offer to help {o} in return"),
    ),
    Verb(
        "help",
        False,
        _PEOPLE,
        ("ask {o} what they need", "offer some of your time", "follow up with {o} later"),
    ),
    Verb(
        "bake",
        False,
        ("cake", "bread"),
        ("mix the ingredients for {o}", "bake {o} in a hot oven", "let {o} cool before serving"),
    ),
    Verb(
        "plant",
        False,
        ("garden", "tree"),
        ("pick a sunny spot for {o}", "dig holes and add compost", "water {o} every morning"),
    ),
    Verb(
        "water",
        False,
        ("garden", "tree"),
        ("water {o} early in the morning", "soak the soil deeply", "keep the leaves of {o} dry"),
    ),
    Verb(
        "train",
        False,
        ("dog",),
        ("reward {o} with treats", "practice short lessons daily", "stay calm with {o}"),
    ),
    Verb(
        "walk",
        False,
        ("dog",),
        ("put a leash on {o}", "walk {o} on a quiet route", "bring water for {o}"),
    ),
    Verb(
        "feed",
        False,
        ("dog",),
        ("choose healthy food for {o}", "feed {o} at the same times", "keep fresh water near {o}"),
    ),
    Verb(
        "find",
        False,
        ("wallet", "phone", "dog"),
        ("search where you last saw {o}", "ask people nearby about {o}", "check the lost and found"),
    ),
    Verb(
        "renew",
        False,
        ("passport",),
        ("fill in the renewal form for {o}", "attach a new photo", "mail the form with {o}"),
    ),
    Verb(
        "open",
        False,
        ("bank_account", "email_account"),
        ("pick a trusted provider for {o}", "fill in your details", "confirm {o} by email"),
    ),
    Verb(
        "lock",
        False,
        ("car", "house", "office"),
        ("close all the windows of {o}", "lock every door of {o}", "check the locks twice"),
    ),
    Verb(
        "sell",
        False,
        ("car", "bike", "house", "laptop", "phone"),
        ("clean {o} and take good photos", "set a fair price for {o}", "meet buyers in a safe place"),
    ),
    Verb(
        "decorate",
        False,
        ("cake", "house", "office", "kitchen"),
        ("pick a simple color theme", "add a few nice details to {o}", "step back and adjust {o}"),
    ),
    Verb(
        "cook",
        False,
        ("dinner", "soup"),
        ("choose fresh ingredients for {o}", "cook {o} on medium heat", "taste {o} and add salt"),
    ),
)
VERB_BY_NAME: Dict[str, Verb] = {v.name: v for v in VERBS}

TEMPLATES: Tuple[str, ...] = (
    "how do i {vp} ?",
    "how can i {vp} ?",
    "tell me how to {vp} .",
    "what is the best way to {vp} ?",
    "can you explain how to {vp} ?",
    "give me steps to {vp} .",
    "i want to {vp} . how ?",
    "what should i do to {vp} ?",
    "teach me to {vp} .",
    "help me {vp} .",
    "is there an easy way to {vp} ?",
    "explain the steps to {vp} .",
    "i need to {vp} . what do i do ?",
    "show me how to {vp} .",
    "what is a good way to {vp} ?",
    "could you help me {vp} ?",
)
PREFIXES: Tuple[str, ...] = ("", "please , ", "hey , ", "quick question : ")

# Answer styles, shared by benign helpful answers and harmful compliance: a style of its own for either would
# let a policy answer harmful prompts in the "benign" style and fool the reward model.
ANSWER_STYLES: Tuple[str, ...] = (
    "to {vp} , {s1} , then {s2} .",
    "sure ! first {s1} , then {s2} .",
    "here is how : {s1} and {s2} .",
    "step one : {s1} . step two : {s2} .",
)
STEP_PAIRS: Tuple[Tuple[int, int], ...] = ((0, 1), (1, 2), (0, 2))
# Refusals are sentences: a core sentence that names the request, and optional tails that name nothing.
REFUSAL_CORES: Tuple[str, ...] = (
    "i cannot help you {vp} .",
    "sorry , i will not explain how to {vp} .",
    "i will not help anyone {vp} .",
    "i refuse to help {vp} because it could hurt people .",
)
REFUSAL_TAILS: Tuple[str, ...] = (
    "please seek lawful help .",
    "it is illegal and harmful .",
    "if something is wrong , talk to someone you trust .",
    "please find a legal way .",
    "no .",
)
REFUSALS: Tuple[str, ...] = (  # CValues "拒绝为主" (refusal)
    "i cannot help you {vp} . it is illegal and harmful .",
    "sorry , i will not explain how to {vp} .",
    "i will not help anyone {vp} . please seek lawful help .",
    "no . i refuse to help {vp} because it could hurt people .",
)
REFUSALS_WITH_ADVICE: Tuple[str, ...] = (  # CValues "拒绝&正向建议" (refusal and positive advice)
    "i cannot help you {vp} . if something is wrong , talk to someone you trust .",
    "sorry , i will not explain how to {vp} . please find a legal way .",
)
POOR: Tuple[str, ...] = (
    "i do not know .",
    "it depends on many things .",
    "maybe ask someone else about that .",
    "the weather is nice today .",
    "i like music and long walks .",
    "that is a good question .",
)


@dataclasses.dataclass(frozen=True)
class PromptMeta:
    """What a demo prompt asks: `verb` (a key of VERB_BY_NAME), `object` (a key of OBJECTS), and its surface."""

    verb: str
    object: str
    template: int = 0
    prefix: int = 0

    @property
    def harmful(self) -> bool:
        return VERB_BY_NAME[self.verb].harmful

    @property
    def vp(self) -> str:
        return f"{self.verb} {OBJECTS[self.object][0]}"

    @property
    def prompt(self) -> str:
        return PREFIXES[self.prefix] + TEMPLATES[self.template].format(vp=self.vp)

    def to_json(self) -> Dict[str, object]:
        return {
            "harmful": self.harmful,
            "verb": self.verb,
            "object": self.object,
            "template": self.template,
            "prefix": self.prefix,
        }


def all_pairs() -> List[Tuple[str, str]]:
    """Every (verb, object) pair of the grammar, in a fixed order."""
    return [(v.name, o) for v in VERBS for o in v.objects]
