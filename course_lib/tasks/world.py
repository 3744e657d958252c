"""The closed world of the synthetic TL;DR task: situations, lexicons and phrasings.

Every post is built from one *situation* (a kind of advice request, e.g. a landlord keeping a
deposit) and a record of four *key facts*:

* ``other``    -- who the post is about (``landlord``, ``boyfriend``, ...);
* ``issue``    -- what happened (anchored by a word such as ``deposit`` or ``phone``);
* ``detail``   -- the one number, place or name that matters (``$800``, ``Denver``, ``3 years``);
* ``question`` -- what the poster asks (anchored by ``court``, ``trust``, ``quit``, ...).

Each fact carries *anchors*: short phrases of which at least one appears in every sentence
that states the fact, in the post and in any summary the generator writes. The oracle
(:mod:`course_lib.tasks.oracle`) decides coverage by looking for anchors, and faithfulness by
looking for *entities* (relations, places, names, numbers) that the post does not contain. The
lexicons below are the entity inventory. Distractor sentences put other entities of the same
kinds into the post, so that a summary has to select rather than copy.

Templates use ``{other}``, ``{detail}`` and pronouns of the other person: ``{he} {He} {him}
{his} {His}``.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- entity lexicons ---------------------------------------------------------------------------
# Relations whose gender is fixed; the others draw "he" or "she" per record.
GENDERED = {
    "boyfriend": "m",
    "girlfriend": "f",
    "husband": "m",
    "wife": "f",
    "brother": "m",
    "sister": "f",
    "mom": "f",
    "dad": "m",
}
RELATIONS = (
    "landlord",
    "roommate",
    "coworker",
    "boss",
    "manager",
    "boyfriend",
    "girlfriend",
    "husband",
    "wife",
    "brother",
    "sister",
    "cousin",
    "mom",
    "dad",
    "neighbor",
    "best friend",
)
# A distractor may mention one of these; they never are the post's ``other``.
SIDE_RELATIONS = ("mom", "dad", "sister", "brother", "cousin", "roommate", "best friend")
CITIES = (
    "Denver",
    "Seattle",
    "Boston",
    "Austin",
    "Chicago",
    "Portland",
    "Phoenix",
    "Atlanta",
    "Miami",
    "Dallas",
)
PETS = ("Milo", "Luna", "Pepper", "Oscar", "Daisy", "Biscuit")
JOBS = ("nurse", "barista", "teacher", "cashier", "plumber", "paralegal")
PROJECTS = ("budget", "website", "marketing", "onboarding", "inventory", "training")
AMOUNTS = ("$200", "$300", "$400", "$500", "$600", "$750", "$800", "$900", "$1200", "$1500")
DURATIONS = ("6 months", "8 months", "2 years", "3 years", "4 years", "5 years", "7 years")
HOURS = ("10 hours", "12 hours", "15 hours", "20 hours")
TIMES = ("1am", "2am", "3am", "4am")
# Single-word entities the oracle recognises (lower case). Numbers are recognised by shape.
ENTITY_WORDS = frozenset(
    w.lower() for w in (*RELATIONS, *CITIES, *PETS, *JOBS, *PROJECTS) if " " not in w
) | {"friend"}
DETAIL_LEXICONS = {
    "amount": AMOUNTS,
    "city": CITIES,
    "duration": DURATIONS,
    "project": PROJECTS,
    "hours": HOURS,
    "time": TIMES,
}


@dataclass(frozen=True)
class Situation:
    """One kind of advice request and every phrasing the generator may use for it.

    ``post_problem`` states ``other``, ``issue`` and ``detail``; ``post_question`` states the
    question. The ``sum_*`` phrasings are predicates after "my {other}" in a summary: ``full``
    keeps issue and detail, ``nodetail`` drops the detail, ``vague`` drops the issue (keeps the
    detail), ``vague_nodetail`` drops both.
    """

    name: str
    subreddit: str
    others: tuple[str, ...]
    detail_kind: str
    issue_anchors: tuple[str, ...]
    question_anchors: tuple[str, ...]
    titles: tuple[str, ...]
    post_problem: tuple[str, ...]
    post_extra: tuple[str, ...]
    post_question: tuple[str, ...]
    sum_full: tuple[str, ...]
    sum_nodetail: tuple[str, ...]
    sum_vague: tuple[str, ...]
    sum_vague_nodetail: tuple[str, ...]
    sum_question: tuple[str, ...]
    short: tuple[str, ...]  # two- to four-word non-summaries ("Landlord drama.")


PARTNERS = ("boyfriend", "girlfriend", "husband", "wife")

SITUATIONS: tuple[Situation, ...] = (
    Situation(
        name="deposit",
        subreddit="legaladvice",
        others=("landlord",),
        detail_kind="amount",
        issue_anchors=("deposit",),
        question_anchors=("court",),
        titles=(
            "Landlord won't return my security deposit",
            "Landlord kept my deposit, what are my options?",
            "Deposit not returned after moving out",
        ),
        post_problem=(
            "I moved out of my apartment last month and my {other} kept my {detail} security "
            "deposit.",
            "My {other} is refusing to give back my {detail} deposit even though I moved out "
            "weeks ago.",
            "When I moved out, my {other} said {he} would keep my {detail} deposit.",
        ),
        post_extra=(
            "{He} claims the carpet was damaged, but it was already like that when I moved in.",
            "I have photos from the day I moved in and the day I left.",
            "{He} stopped answering my texts after I asked for an itemized list.",
        ),
        post_question=(
            "Should I take {him} to small claims court?",
            "Is it worth going to small claims court over this?",
            "Can I get it back through small claims court?",
        ),
        sum_full=("kept my {detail} deposit", "won't return my {detail} security deposit"),
        sum_nodetail=("kept my deposit", "won't return my security deposit"),
        sum_vague=("owes me {detail}", "is being difficult about {detail}"),
        sum_vague_nodetail=("is being difficult", "is being unfair to me"),
        sum_question=(
            "should I go to small claims court?",
            "is small claims court worth it?",
            "can small claims court help?",
        ),
        short=("Landlord drama.", "Deposit problems.", "Need legal advice."),
    ),
    Situation(
        name="loan",
        subreddit="personalfinance",
        others=("best friend", "roommate", "coworker", "brother", "sister", "cousin"),
        detail_kind="amount",
        issue_anchors=("lent", "borrowed", "owes", "loan"),
        question_anchors=("money back",),
        titles=(
            "They won't pay me back",
            "How to get back money I lent?",
            "Lent money and now they are ignoring it",
        ),
        post_problem=(
            "Back in the spring I lent my {other} {detail} to help with rent.",
            "My {other} borrowed {detail} from me and promised to pay it back within a month.",
            "A few months ago my {other} asked for a loan of {detail} and I said yes.",
        ),
        post_extra=(
            "Since then {he} has bought a new phone and gone on a trip, but says {he} is broke.",
            "{He} has not mentioned the money once.",
            "Whenever I bring it up {he} changes the subject.",
        ),
        post_question=(
            "How do I get my money back without ruining things?",
            "What is the best way to ask for my money back?",
            "Is it rude to ask for the money back at this point?",
        ),
        sum_full=("borrowed {detail} and never paid me back", "owes me {detail} and dodges it"),
        sum_nodetail=("borrowed money and never paid me back", "owes me money and dodges it"),
        sum_vague=("keeps dodging me about {detail}", "ignores me about {detail}"),
        sum_vague_nodetail=("keeps dodging me", "is ignoring me"),
        sum_question=("how do I get my money back?", "how do I ask for the money back?"),
        short=("Money problems.", "Friend drama.", "Need advice."),
    ),
    Situation(
        name="move",
        subreddit="relationships",
        others=PARTNERS,
        detail_kind="city",
        issue_anchors=("job",),
        question_anchors=("move",),
        titles=(
            "Partner got a job in another city",
            "Do I follow my partner across the country?",
            "Long distance or move?",
        ),
        post_problem=(
            "My {other} just got a job offer in {detail} and wants us to go there together.",
            "My {other} accepted a job in {detail} and asked me to come with {him}.",
            "My {other} was offered a great job in {detail} and has already said yes.",
        ),
        post_extra=(
            "I love {him}, but all of my family and friends are here.",
            "I also have a job I really like here.",
            "{He} says it would only be for a couple of years.",
        ),
        post_question=(
            "Should I move with {him} or stay here?",
            "Do I move across the country for {him}?",
            "Would it be crazy to move for a relationship?",
        ),
        sum_full=("got a job in {detail} and wants me to come", "is taking a job in {detail}"),
        sum_nodetail=("got a job in another city", "is taking a job far away"),
        sum_vague=("is going to {detail}", "wants to live in {detail}"),
        sum_vague_nodetail=("is leaving", "wants a big change"),
        sum_question=("should I move too?", "do I move with {him}?", "should I move or stay?"),
        short=("Relationship question.", "Partner problems.", "Need advice."),
    ),
    Situation(
        name="phone",
        subreddit="relationships",
        others=PARTNERS,
        detail_kind="duration",
        issue_anchors=("phone",),
        question_anchors=("trust",),
        titles=(
            "Caught my partner snooping",
            "Partner went through my phone",
            "Privacy in a relationship?",
        ),
        post_problem=(
            "Last week I caught my {other} of {detail} going through my phone while I was in "
            "the shower.",
            "I found out that my {other} of {detail} has been reading the messages on my phone.",
            "My {other} of {detail} has been secretly checking my phone at night.",
        ),
        post_extra=(
            "When I asked why, {he} said {he} just had a feeling and then got angry at me.",
            "I have never given {him} a reason to doubt me.",
            "Nothing like this has ever happened before.",
        ),
        post_question=(
            "How do I trust {him} again?",
            "Can trust come back after something like this?",
            "Is there any way to rebuild trust here?",
        ),
        sum_full=("of {detail} went through my phone", "of {detail} secretly read my phone"),
        sum_nodetail=("went through my phone", "secretly read my phone"),
        sum_vague=("of {detail} invaded my privacy", "of {detail} was snooping on me"),
        sum_vague_nodetail=("invaded my privacy", "was snooping on me"),
        sum_question=("how do I trust {him} again?", "can we rebuild trust?"),
        short=("Relationship drama.", "Snooping partner.", "Need advice."),
    ),
    Situation(
        name="credit",
        subreddit="careerguidance",
        others=("coworker", "boss", "manager"),
        detail_kind="project",
        issue_anchors=("credit",),
        question_anchors=("HR",),
        titles=(
            "Someone took credit for my work",
            "Credit for my project was stolen",
            "Work drama, need advice",
        ),
        post_problem=(
            "I spent weeks on the {detail} project and my {other} took all the credit for it.",
            "My {other} took full credit for the {detail} project that I did almost alone.",
            "In a meeting my {other} presented the {detail} project and took the credit for "
            "my work.",
        ),
        post_extra=(
            "{He} did not even open the files until the day before.",
            "Everyone congratulated {him} and nobody asked me anything.",
            "I have all the drafts with my name on them.",
        ),
        post_question=(
            "Should I go to HR about this?",
            "Is it worth talking to HR or will it backfire?",
            "Do I report this to HR?",
        ),
        sum_full=("took credit for my {detail} project", "stole the credit for my {detail} work"),
        sum_nodetail=("took credit for my project", "stole the credit for my work"),
        sum_vague=("presented my {detail} project as {his} own", "took over my {detail} work"),
        sum_vague_nodetail=("was unfair to me at work", "took over my work"),
        sum_question=("should I go to HR?", "is HR worth it?"),
        short=("Work drama.", "Office problems.", "Need advice."),
    ),
    Situation(
        name="overtime",
        subreddit="careerguidance",
        others=("boss", "manager"),
        detail_kind="hours",
        issue_anchors=("overtime",),
        question_anchors=("quit",),
        titles=("Unpaid overtime every week", "Is this normal at work?", "Work and overtime"),
        post_problem=(
            "My {other} expects me to work {detail} of unpaid overtime every week.",
            "For months my {other} has had me doing {detail} of overtime a week without pay.",
            "Every week my {other} piles on {detail} of overtime that I never get paid for.",
        ),
        post_extra=(
            "When I brought it up {he} said everyone else does it without complaining.",
            "I am salaried but my contract says 40 hours.",
            "I have missed a lot of dinners with my family because of it.",
        ),
        post_question=(
            "Should I quit or try to fix this?",
            "Is it time to quit?",
            "Would you quit over this?",
        ),
        sum_full=(
            "wants {detail} of unpaid overtime a week",
            "makes me work {detail} of overtime weekly",
        ),
        sum_nodetail=("wants unpaid overtime every week", "makes me work overtime for free"),
        sum_vague=("makes me work an extra {detail} a week", "wants an extra {detail} from me"),
        sum_vague_nodetail=("is treating me badly", "expects too much"),
        sum_question=("should I quit?", "is it time to quit?"),
        short=("Work problems.", "Bad boss.", "Need advice."),
    ),
    Situation(
        name="noise",
        subreddit="neighbors",
        others=("neighbor",),
        detail_kind="time",
        issue_anchors=("music",),
        question_anchors=("complaint",),
        titles=("Loud neighbor every night", "Noise problem with neighbor", "Can't sleep"),
        post_problem=(
            "My {other} upstairs plays loud music until {detail} almost every night.",
            "Every night the music from my {other} goes on until {detail}.",
            "My {other} has started blasting music until {detail} on work nights.",
        ),
        post_extra=(
            "I have knocked on {his} door twice and {he} just laughed.",
            "I have to be up at 6am for work.",
            "I left a polite note but nothing changed.",
        ),
        post_question=(
            "Should I file a noise complaint with the city?",
            "Is it time for a noise complaint?",
            "Would a noise complaint make things worse?",
        ),
        sum_full=("plays loud music until {detail}", "blasts music until {detail} every night"),
        sum_nodetail=("plays loud music every night", "blasts music all night"),
        sum_vague=("keeps me up until {detail}", "is loud until {detail}"),
        sum_vague_nodetail=("keeps me up at night", "is too loud"),
        sum_question=("should I file a noise complaint?", "is a noise complaint worth it?"),
        short=("Neighbor drama.", "Noise problems.", "Need advice."),
    ),
    Situation(
        name="wedding",
        subreddit="family",
        others=("sister", "brother", "cousin", "best friend"),
        detail_kind="amount",
        issue_anchors=("wedding",),
        question_anchors=("say no",),
        titles=(
            "Asked to pay for a wedding",
            "Is it wrong to refuse?",
            "Family wants money for a wedding",
        ),
        post_problem=(
            "My {other} is getting married and expects me to pay {detail} toward the wedding.",
            "My {other} told me that I have to chip in {detail} for {his} wedding.",
            "For {his} wedding next year my {other} asked me for {detail}.",
        ),
        post_extra=(
            "I am a student and that is more than I make in a month.",
            "Nobody else in the family was asked for anything.",
            "{He} got upset when I hesitated.",
        ),
        post_question=(
            "Would I be wrong to say no?",
            "Is it okay to say no?",
            "Am I wrong for wanting to say no?",
        ),
        sum_full=("wants me to pay {detail} for {his} wedding", "expects {detail} for the wedding"),
        sum_nodetail=("wants me to pay for {his} wedding", "expects money for the wedding"),
        sum_vague=("wants {detail} from me", "is asking me for {detail}"),
        sum_vague_nodetail=("wants money from me", "is asking me for money"),
        sum_question=("can I say no?", "is it wrong to say no?"),
        short=("Family drama.", "Money problems.", "Need advice."),
    ),
)
SITUATION_BY_NAME = {s.name: s for s in SITUATIONS}

INTROS = (
    "I ({age}{g}) need some advice.",
    "Throwaway because people I know use this site.",
    "Long time lurker, first time posting.",
    "So this has been going on for a while and I ({age}{g}) need outside opinions.",
    "Not sure if this is the right place, but here goes.",
)
FEELINGS = (
    "I am so stressed about this.",
    "Honestly I do not know what to do anymore.",
    "This has been eating at me for days.",
    "I feel stupid for even asking.",
    "Any advice would help.",
)
# Off-topic sentences. Slots draw entities that differ from the record's key facts.
DISTRACTORS = (
    "For context, I grew up in {city} and moved here for school.",
    "I work as a {job}, so my schedule is all over the place.",
    "My {relation} thinks I am overreacting, but I am not so sure.",
    "I also have a cat named {pet} who has been my only comfort lately.",
    "Last month I spent {amount} fixing my car, so money is tight.",
    "It has been {duration} since I last took a real vacation.",
    "Sorry for any typos, I am on mobile.",
    "I have been sleeping badly and drinking way too much coffee.",
    "My {relation} and I went to {city} last summer and it was great.",
)
MARKUP = ("TL;DR:", "tl;dr", "POST:", "Summary:")
