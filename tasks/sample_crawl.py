"""A small, realistic, deterministic crawl to run the whole pipeline on without touching the internet.

`generate_sample_crawl` writes gzipped WARC/1.1 files the way Common Crawl does (one gzip member
per record: a warcinfo record, then a request and a response per URL, with digests) plus a
`truth.json` naming what was planted at each URL, so tests can check the funnel against ground
truth. Page kinds:

    clean             an English article on a hobby site, with nav, sidebar, footer and cookie banner
    spam              keyword stuffing and repeated lines (should fail Gopher repetition)
    short             an article of one sentence (too few words)
    boilerplate_only  an archive page of menus and link lists, no prose
    blocked_url       a clean article on a host or path a URL blocklist rejects (see BLOCKED_HOSTS)
    exact_duplicate   byte-identical HTML of a clean page under another URL
    near_duplicate    a clean page with about 5% of its words changed, in two clusters
    pii               a clean page with e-mails and public IPv4/IPv6 addresses (scrub) and private ones (keep)
    non_english       German, French, Spanish, Russian (windows-1251) or Japanese (Shift_JIS, <meta> only)
    code_page         a tutorial with JavaScript in <pre> blocks (contains '{')
    non_html          an image/png response
    not_found         an HTTP 404 page
    redirect          an HTTP 301 to a clean page

All text comes from a small hand-written grammar per language (below), so every clean English
page is fresh prose with stop words and full sentences, and passes the Gopher, C4 and FineWeb
filters after main-content extraction. Same seed, same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import html
import ipaddress
import itertools
import json
import random
import re
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tasks.inputs import SNAPSHOT_ID, check_snapshot_id

KINDS = (
    "clean", "spam", "short", "boilerplate_only", "blocked_url", "exact_duplicate", "near_duplicate",
    "pii", "non_english", "code_page", "non_html", "not_found", "redirect",
)
# Hosts the shipped default URL blocklist must contain (blocked_url pages also use banned words).
BLOCKED_HOSTS = ("porn-example-tube.com", "xxx-casino-example.net")
# Share of all pages per planted kind; the rest are clean. Every kind appears at least once.
KIND_SHARES = {
    "spam": 0.05, "short": 0.04, "boilerplate_only": 0.04, "blocked_url": 0.04, "exact_duplicate": 0.05,
    "near_duplicate": 0.05, "pii": 0.05, "non_english": 0.07, "code_page": 0.03, "non_html": 0.03,
    "not_found": 0.02, "redirect": 0.02,
}


@dataclass
class SampleCrawl:
    """What `generate_sample_crawl` wrote, and the ground truth about every response URL."""

    warc_paths: list[Path]
    truth_path: Path
    truth: dict[str, str]  # url -> kind (one of KINDS)
    languages: dict[str, str] = field(default_factory=dict)  # url -> ISO 639-1, for HTML pages
    duplicate_of: dict[str, str] = field(default_factory=dict)  # duplicate url -> original url
    pii: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # url -> emails/public_ips/private_ips


# --- English: a topic vocabulary and a sentence grammar ------------------------------------------


@dataclass(frozen=True)
class Topic:
    site: str
    host: str
    things: tuple[str, ...]  # singular nouns
    places: tuple[str, ...]  # take "in"
    actions: tuple[tuple[str, str], ...]  # (verb, complement)


TOPICS = (
    Topic(
        "Riverside Garden Notes", "riverside-garden-notes.org",
        ("raised bed", "compost bin", "watering can", "pruning saw", "seed tray", "garden fork", "tomato plant",
         "rose bush", "wheelbarrow", "rain barrel", "cold frame", "herb planter"),
        ("the back garden", "the greenhouse", "the allotment", "the potting shed", "the vegetable patch",
         "the front yard"),
        (("plant", "early potatoes"), ("prune", "the apple trees"), ("water", "the seedlings"),
         ("turn", "the compost"), ("sow", "carrot seeds"), ("harvest", "the runner beans"),
         ("weed", "the flower borders"), ("mulch", "the strawberry beds"), ("repot", "the herbs"),
         ("divide", "the perennials")),
    ),
    Topic(
        "Kitchen Table Stories", "kitchen-table-stories.com",
        ("sourdough starter", "cast iron pan", "mixing bowl", "rolling pin", "bread tin", "spice rack",
         "stock pot", "wooden spoon", "kitchen scale", "pie dish", "baking stone", "chopping board"),
        ("the kitchen", "the pantry", "the farmhouse kitchen", "the community hall", "the village bakery",
         "the school canteen"),
        (("bake", "rye bread"), ("knead", "the dough"), ("roast", "winter vegetables"),
         ("simmer", "a rich tomato sauce"), ("prepare", "a Sunday lunch"), ("taste", "the new recipe"),
         ("slice", "the onions"), ("season", "the soup"), ("freeze", "the leftovers"), ("mix", "the batter")),
    ),
    Topic(
        "Long Road Cycling", "long-road-cycling.net",
        ("road bike", "bike pump", "chain tool", "saddle bag", "rear light", "water bottle", "tyre lever",
         "helmet", "gravel bike", "cycle computer", "spare tube", "handlebar bag"),
        ("the canal path", "the hills north of town", "the club house", "the workshop", "the village square",
         "the coastal lanes"),
        (("ride", "the old forest loop"), ("fix", "a flat tyre"), ("clean", "the chain"),
         ("plan", "a weekend route"), ("climb", "the steep hill"), ("adjust", "the brakes"),
         ("pack", "the panniers"), ("join", "a group ride"), ("train", "for the autumn race"),
         ("replace", "the worn brake pads")),
    ),
    Topic(
        "Weekend Fixer Journal", "weekend-fixer-journal.com",
        ("cordless drill", "spirit level", "paint roller", "tape measure", "tool box", "ladder",
         "sanding block", "door hinge", "window frame", "wall plug", "tile cutter", "workbench"),
        ("the hallway", "the garage", "the spare room", "the cellar", "the loft", "the bathroom"),
        (("paint", "the hallway walls"), ("repair", "a squeaky door"), ("replace", "the kitchen tap"),
         ("sand", "the old floorboards"), ("hang", "new shelves"), ("seal", "the bathroom window"),
         ("build", "a simple bookcase"), ("insulate", "the loft"), ("measure", "the window frames"),
         ("clear", "the blocked drain")),
    ),
    Topic(
        "Quiet Wings Birding", "quiet-wings-birding.org",
        ("pair of binoculars", "field guide", "bird feeder", "nest box", "spotting scope", "notebook",
         "camera lens", "bird bath", "wooden hide", "feeding station", "trail map", "rain jacket"),
        ("the marsh", "the nature reserve", "the old orchard", "the river meadows", "the woodland edge",
         "the estuary"),
        (("watch", "the swallows"), ("count", "the geese"), ("record", "every sighting"),
         ("clean", "the bird feeder"), ("photograph", "a kingfisher"), ("identify", "the warblers"),
         ("visit", "the reserve"), ("follow", "the migration"), ("build", "a nest box"),
         ("listen", "to the dawn chorus")),
    ),
    Topic(
        "Old Town Chronicle", "old-town-chronicle.org",
        ("parish record", "old photograph", "town map", "stone bridge", "market hall", "letter", "diary",
         "railway station", "church bell", "mill wheel", "shop sign", "postcard"),
        ("the town archive", "the museum", "the old mill", "the market square", "the parish church",
         "the library reading room"),
        (("study", "the parish records"), ("visit", "the town archive"), ("restore", "the old mill"),
         ("collect", "old postcards"), ("interview", "older residents"), ("map", "the lost streets"),
         ("research", "the family history"), ("photograph", "the market hall"),
         ("transcribe", "a wartime diary"), ("organise", "a heritage walk")),
    ),
    Topic(
        "Dark Sky Diary", "dark-sky-diary.net",
        ("telescope", "star chart", "red torch", "camera tripod", "eyepiece", "planisphere", "folding chair",
         "observing log", "warm flask", "lens cap", "sturdy mount", "moon filter"),
        ("the back field", "the observatory", "the hills above the village", "the garden",
         "the dark sky park", "the club car park"),
        (("observe", "the moon"), ("photograph", "the Milky Way"), ("track", "the planets"),
         ("align", "the telescope"), ("count", "meteors"), ("sketch", "the craters"), ("teach", "the beginners"),
         ("spot", "the moons of Jupiter"), ("plan", "a viewing night"), ("clean", "the eyepieces")),
    ),
)

PEOPLE = (
    "my neighbour Anna", "our editor", "a retired teacher from the village", "my brother", "Tom", "Priya",
    "Mr Okafor", "the club secretary", "an old friend of mine", "my daughter", "Helen", "Marcus",
    "Mrs Jensen", "the youngest volunteer", "our treasurer", "a reader called Samuel",
)
GROUPS = (
    "beginners", "most of our readers", "the volunteers", "many families", "experienced members",
    "our neighbours", "the students", "a few good friends", "people in our town", "the regulars",
)
TIMES = (
    "last spring", "one rainy Saturday", "early this morning", "at the end of October",
    "over the long weekend", "a few years ago", "in the middle of winter", "on a quiet Tuesday evening",
    "just before the holidays", "the summer after we moved here", "on the first warm day of the year",
    "late in the afternoon",
)
SEASONS = ("spring", "summer", "autumn", "winter", "holiday season", "school term")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
TOWNS = ("Ashford Green", "Millbrook", "Eastwick", "Harrowfield", "Little Marston", "Brackenridge",
         "Oakhurst", "Kingsbridge", "Fernley", "Stonebury")
ADJECTIVES = ("sturdy", "simple", "small", "reliable", "old", "heavy", "bright", "practical", "cheap",
              "beautiful", "muddy", "worn", "tidy", "second-hand", "handmade", "modest")
COMPARATIVES = ("smaller", "heavier", "sturdier", "lighter", "larger", "simpler", "quieter", "cheaper")
WEATHER = ("mild", "dry", "cool and still", "warm", "overcast but calm", "crisp")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve")
REPLACEMENT_WORDS = ("lovely", "careful", "quick", "gentle", "yellow", "wooden", "narrow", "friendly",
                     "patient", "morning", "evening", "village", "silver", "proper", "honest", "steady")

# {person}/{group}: subjects; {vb} {vs} {vd} {vg}: the topic action as base, 3rd singular, past, -ing.
ENGLISH_TEMPLATES = (
    "{time}, {person} decided to {vb} in {place} and wrote down every detail.",
    "Most people assume that {vg} is difficult, but it only takes {number} minutes once you know the routine.",
    "The {adj} {thing} in {place} was the first thing that caught my attention.",
    "{person} told me that {vg} works best when the weather is {weather}.",
    "If you have never tried {vg} before, start with a {adj} {thing} and a little patience.",
    "We spent {number} hours {vg} while the children explored {place}.",
    "There is no single right way to {vb}, and that is part of the appeal for {group}.",
    "Some readers asked whether it is worth buying a new {thing}, and my honest answer is that it depends on "
    "how often you use it.",
    "After {number} weeks of practice, {person} can {vb} without looking at any notes.",
    "It was {adj} work, yet nobody complained about the long afternoon in {place}.",
    "{group} often forget that a {adj} {thing} needs regular care.",
    "Why do so many {things} end up forgotten in {place}?",
    "The answer, as far as I can tell, is that {group} rarely plan ahead.",
    "During the {season}, {person} {vs} at least twice a week.",
    "A good {thing} does not have to be expensive, but it should feel solid in your hands.",
    "My grandmother used to {vb} with nothing more than an old {thing} and a lot of common sense.",
    "When the new {thing} finally arrived, we realised it was much {comparative} than the picture suggested.",
    "Please do not be discouraged if your first attempt to {vb} goes wrong.",
    "Everyone makes mistakes with a {thing}, and most of them teach you more than any book could.",
    "Next month we will write about {vg} on a budget, so keep an eye on this page.",
    "{person} has been {vg} for {number} years and still finds something new each {season}.",
    "The library in {town} has a small collection of books about {things}, which is a great place to begin.",
    "One reader from {town} sent us a photo of their {thing}, and it looked wonderful.",
    "Looking back, I would have started {vg} much earlier.",
    "It is easy to underestimate how much time {vg} really takes in {month}.",
    "Keep a notebook near {place} so that you can record what worked and what did not.",
    "On a {weather} morning in {month}, {person} {vd} before breakfast.",
    "That small change made a remarkable difference to the way {group} {vb}.",
    "We also learned that {things} last longer when they are stored in a dry place.",
    "Would we {vb} again next {season}? Absolutely, and we would invite more friends next time.",
    "The cost was lower than expected, mostly because {person} lent us a {adj} {thing}.",
    "Few hobbies offer such a pleasant mix of fresh air, quiet focus and friendly conversation as {vg}.",
    "In our experience, {vg} is most rewarding when it becomes a weekly habit.",
    "Do not forget to clean the {thing} before putting it away in {place}.",
    "{town} has a lively group of people who enjoy {vg}, and they meet on the first Sunday of every month.",
    "Several neighbours stopped by to ask why we wanted to {vb}, which led to some lovely conversations.",
    "Every {thing} tells a small story about the person who owned it before.",
    "The forecast for {town} promised rain, but the sky stayed clear until {person} went home.",
    "Our favourite part of the day was {vg} together after lunch.",
    "There is always something to learn about {things}, even after many years.",
    "{time}, {group} {vd} in {place} for the very first time.",
    "Nobody expected the {adj} {thing} to last so long, but it is still in use today.",
)
ENGLISH_SUBHEADINGS = ("What we learned", "Getting started", "A few practical tips", "Looking ahead",
                       "The tools we used", "Common mistakes", "Why it matters")
ENGLISH_TITLES = (
    "How We Learned to {Vb} {Comp}", "{Number} Lessons From a Year of {Vg} {Comp}",
    "A Beginner's Guide to {Vg} {Comp}", "Notes From {Place}", "Why {Vg} {Comp} Is Worth the Effort",
    "What I Wish I Knew Before {Vg} {Comp}",
)
DOUBLED_FINAL = {"plan", "map", "spot"}  # plan -> planned, planning
IRREGULAR_PAST = {"freeze": "froze", "ride": "rode", "build": "built", "hang": "hung", "teach": "taught"}
SLOT = re.compile(r"\{(\w+)\}")
A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiou])")  # "a old" -> "an old"


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _past(verb: str) -> str:
    if verb in IRREGULAR_PAST:
        return IRREGULAR_PAST[verb]
    if verb in DOUBLED_FINAL:
        return verb + verb[-1] + "ed"
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def _gerund(verb: str) -> str:
    if verb in DOUBLED_FINAL:
        return verb + verb[-1] + "ing"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _plural(noun: str) -> str:
    if noun.startswith("pair of "):
        return "pairs of " + noun[len("pair of "):]
    return _third_person(noun)  # the same spelling rules


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _title_case(text: str) -> str:
    small = {"a", "an", "and", "the", "to", "of", "in", "for", "on", "from"}
    words = text.split(" ")
    return " ".join(w if i and w.lower() in small else _capitalize(w) for i, w in enumerate(words))


class _EnglishWriter:
    """Fills ENGLISH_TEMPLATES from one topic; each template is used at most once per article."""

    def __init__(self, topic: Topic, rng: random.Random) -> None:
        self.topic, self.rng = topic, rng
        self.action = rng.choice(topic.actions)  # what the article is about: (verb, complement)
        self.fillers = {
            "person": lambda: rng.choice(PEOPLE), "group": lambda: rng.choice(GROUPS),
            "time": lambda: rng.choice(TIMES), "season": lambda: rng.choice(SEASONS),
            "month": lambda: rng.choice(MONTHS), "town": lambda: rng.choice(TOWNS),
            "adj": lambda: rng.choice(ADJECTIVES), "comparative": lambda: rng.choice(COMPARATIVES),
            "weather": lambda: rng.choice(WEATHER), "number": lambda: rng.choice(NUMBERS),
            "thing": lambda: rng.choice(topic.things), "things": lambda: _plural(rng.choice(topic.things)),
            "place": lambda: rng.choice(topic.places),
            "vb": lambda: self._action(lambda v: v), "vs": lambda: self._action(_third_person),
            "vd": lambda: self._action(_past), "vg": lambda: self._action(_gerund),
        }

    def _action(self, inflect: Callable[[str], str]) -> str:
        # Mostly the article's own action, sometimes another one from the topic, for variety.
        verb, complement = self.action if self.rng.random() < 0.6 else self.rng.choice(self.topic.actions)
        return f"{inflect(verb)} {complement}"

    def title(self) -> str:
        verb, complement = self.action
        title = self.rng.choice(ENGLISH_TITLES).format(
            Vb=verb, Vg=_gerund(verb), Comp=complement, Number=self.rng.choice(NUMBERS),
            Place=self.rng.choice(self.topic.places),
        )
        return _title_case(title)

    def paragraphs(self, count: int, sentences_per_paragraph: tuple[int, int] = (3, 4)) -> list[str]:
        templates = list(ENGLISH_TEMPLATES)
        self.rng.shuffle(templates)
        paragraphs = []
        for _ in range(count):
            size = self.rng.randint(*sentences_per_paragraph)
            chosen, templates = templates[:size], templates[size:]
            paragraphs.append(" ".join(self.sentence(t) for t in chosen))
        return paragraphs

    def sentence(self, template: str) -> str:
        filled = SLOT.sub(lambda match: self.fillers[match.group(1)](), template)
        return _capitalize(A_BEFORE_VOWEL.sub(r"\1n ", filled))


# --- Other languages: subject + predicate + adverbial, and whole sentences ------------------------


@dataclass(frozen=True)
class LanguagePack:
    code: str
    charset: str  # how the page is encoded on the wire
    charset_in_header: bool  # False: only a <meta charset> says it (the Japanese pages)
    site: str
    host: str
    subjects: tuple[str, ...]
    predicates: tuple[str, ...]
    adverbials: tuple[str, ...]
    sentences: tuple[str, ...]
    titles: tuple[str, ...]
    chrome: dict[str, str]
    pattern: str = "{subject} {predicate} {adverbial}."  # Japanese orders it differently


LANGUAGES = (
    LanguagePack(
        "de", "utf-8", True, "Gartenfreunde am See", "gartenfreunde-am-see.de",
        ("meine Nachbarin", "der alte Bäcker", "unser Verein", "mein Bruder", "die Lehrerin aus dem Dorf",
         "jeder Anfänger", "Herr Becker", "Frau Schulz", "unsere Tochter", "der Gärtner"),
        ("pflanzt im Frühling neue Tomaten", "backt jeden Samstag frisches Brot",
         "repariert das alte Fahrrad in der Garage", "besucht regelmäßig den Wochenmarkt",
         "kocht eine kräftige Gemüsesuppe", "liest am Abend ein gutes Buch", "gießt die Blumen auf dem Balkon",
         "plant eine lange Wanderung in den Bergen", "sammelt alte Postkarten aus der Stadt",
         "schreibt einen Brief an die Zeitung", "streicht die Wände im Flur", "trifft sich mit Freunden im Café"),
        ("bei schönem Wetter", "nach der Arbeit", "mit großer Geduld", "seit vielen Jahren",
         "ohne lange zu zögern", "zusammen mit den Kindern", "trotz des Regens", "am Sonntagmorgen"),
        ("Das Wetter war in diesem Jahr besonders mild.", "Viele Leser haben uns nach dem Rezept gefragt.",
         "Im Herbst beginnt die schönste Zeit im Garten.", "Es lohnt sich, früh am Morgen anzufangen.",
         "Die Kinder hatten dabei sehr viel Spaß.", "Wir freuen uns schon auf das nächste Treffen.",
         "Nicht alles hat sofort funktioniert, aber wir haben viel gelernt.",
         "Am Ende des Tages waren alle müde und zufrieden."),
        ("Ein Wochenende im Garten", "Tipps für den Herbst", "Unser Verein stellt sich vor",
         "Brot backen wie früher", "Ein Besuch auf dem Wochenmarkt"),
        {"nav": "Startseite|Artikel|Ratgeber|Termine|Über uns|Kontakt", "popular": "Beliebte Beiträge",
         "newsletter": "Newsletter", "newsletter_text": "Die besten Geschichten jeden Freitag in Ihrem Postfach.",
         "subscribe": "Abonnieren", "rights": "Alle Rechte vorbehalten.", "by": "Von",
         "cookies": "Wir verwenden Cookies, um Inhalte zu personalisieren und unseren Datenverkehr zu analysieren.",
         "accept": "Alle akzeptieren", "privacy": "Datenschutzerklärung", "terms": "Nutzungsbedingungen",
         "author": "Sabine Krüger"},
    ),
    LanguagePack(
        "fr", "utf-8", True, "Carnet de Cuisine", "carnet-de-cuisine.fr",
        ("ma voisine", "le vieux boulanger", "notre association", "mon frère", "l'institutrice du village",
         "chaque débutant", "Monsieur Martin", "Madame Dubois", "notre fille", "le jardinier"),
        ("plante de nouvelles tomates au printemps", "prépare du pain frais chaque samedi",
         "répare le vieux vélo dans le garage", "visite souvent le marché du quartier",
         "cuisine une bonne soupe de légumes", "lit un bon livre le soir", "arrose les fleurs sur le balcon",
         "organise une longue randonnée en montagne", "collectionne les vieilles cartes postales",
         "écrit une lettre au journal local", "peint les murs du couloir", "retrouve ses amis au café"),
        ("quand il fait beau", "après le travail", "avec beaucoup de patience", "depuis de nombreuses années",
         "sans hésiter", "avec les enfants", "malgré la pluie", "le dimanche matin"),
        ("Le temps était particulièrement doux cette année.", "Beaucoup de lecteurs nous ont demandé la recette.",
         "L'automne est la plus belle saison pour le jardin.", "Il vaut la peine de commencer tôt le matin.",
         "Les enfants se sont beaucoup amusés.", "Nous attendons déjà la prochaine rencontre avec impatience.",
         "Tout n'a pas fonctionné tout de suite, mais nous avons beaucoup appris.",
         "À la fin de la journée, tout le monde était fatigué mais content."),
        ("Un week-end au jardin", "Nos conseils pour l'automne", "La soupe de légumes de ma grand-mère",
         "Faire son pain comme autrefois", "Une visite au marché du quartier"),
        {"nav": "Accueil|Articles|Guides|Agenda|À propos|Contact", "popular": "Articles populaires",
         "newsletter": "Lettre d'information", "newsletter_text": "Les meilleures histoires chaque vendredi.",
         "subscribe": "S'abonner", "rights": "Tous droits réservés.", "by": "Par",
         "cookies": "Nous utilisons des cookies pour personnaliser le contenu et analyser notre trafic.",
         "accept": "Tout accepter", "privacy": "Politique de confidentialité", "terms": "Conditions d'utilisation",
         "author": "Claire Moreau"},
    ),
    LanguagePack(
        "es", "utf-8", True, "Rutas en Bici", "rutas-en-bici.es",
        ("mi vecina", "el viejo panadero", "nuestra asociación", "mi hermano", "la maestra del pueblo",
         "cada principiante", "el señor García", "la señora López", "nuestra hija", "el jardinero"),
        ("planta tomates nuevos en primavera", "prepara pan fresco cada sábado",
         "arregla la bicicleta vieja en el garaje", "visita a menudo el mercado del barrio",
         "cocina una sopa de verduras muy sabrosa", "lee un buen libro por la noche", "riega las flores del balcón",
         "organiza una larga excursión por la montaña", "colecciona postales antiguas de la ciudad",
         "escribe una carta al periódico local", "pinta las paredes del pasillo",
         "se reúne con sus amigos en la cafetería"),
        ("cuando hace buen tiempo", "después del trabajo", "con mucha paciencia", "desde hace muchos años",
         "sin dudarlo", "junto con los niños", "a pesar de la lluvia", "los domingos por la mañana"),
        ("El tiempo fue especialmente suave este año.", "Muchos lectores nos han preguntado por la receta.",
         "El otoño es la mejor época para el jardín.", "Vale la pena empezar temprano por la mañana.",
         "Los niños se divirtieron muchísimo.", "Ya estamos esperando el próximo encuentro.",
         "No todo salió bien a la primera, pero aprendimos mucho.",
         "Al final del día todos estábamos cansados pero contentos."),
        ("Un fin de semana en bicicleta", "Consejos para el otoño", "La sopa de mi abuela",
         "Hacer pan como antes", "Una visita al mercado del barrio"),
        {"nav": "Inicio|Artículos|Guías|Agenda|Quiénes somos|Contacto", "popular": "Artículos populares",
         "newsletter": "Boletín", "newsletter_text": "Las mejores historias cada viernes en tu correo.",
         "subscribe": "Suscribirse", "rights": "Todos los derechos reservados.", "by": "Por",
         "cookies": "Utilizamos cookies para personalizar el contenido y analizar nuestro tráfico.",
         "accept": "Aceptar todo", "privacy": "Política de privacidad", "terms": "Condiciones de uso",
         "author": "Lucía Fernández"},
    ),
    LanguagePack(
        "ru", "windows-1251", True, "Дачные заметки", "dachnye-zametki.ru",
        ("моя соседка", "старый пекарь", "наш клуб", "мой брат", "учительница из деревни", "каждый новичок",
         "Иван Петрович", "Анна Сергеевна", "наша дочь", "садовник"),
        ("сажает новые помидоры весной", "печёт свежий хлеб каждую субботу", "чинит старый велосипед в гараже",
         "часто ходит на рынок", "варит вкусный овощной суп", "читает хорошую книгу по вечерам",
         "поливает цветы на балконе", "планирует долгий поход в горы", "собирает старые открытки",
         "пишет письмо в местную газету", "красит стены в коридоре", "встречается с друзьями в кафе"),
        ("в хорошую погоду", "после работы", "с большим терпением", "уже много лет", "без лишних раздумий",
         "вместе с детьми", "несмотря на дождь", "по воскресеньям"),
        ("Погода в этом году была особенно мягкой.", "Многие читатели спрашивали нас о рецепте.",
         "Осень — лучшее время для работы в саду.", "Стоит начинать рано утром.", "Детям было очень весело.",
         "Мы уже ждём следующей встречи.", "Не всё получилось сразу, но мы многому научились.",
         "К концу дня все устали, но были довольны."),
        ("Выходные на даче", "Советы на осень", "Суп по бабушкиному рецепту", "Печём хлеб как раньше",
         "Поход на местный рынок"),
        {"nav": "Главная|Статьи|Советы|События|О нас|Контакты", "popular": "Популярные записи",
         "newsletter": "Рассылка", "newsletter_text": "Лучшие истории каждую пятницу на вашу почту.",
         "subscribe": "Подписаться", "rights": "Все права защищены.", "by": "Автор:",
         "cookies": "Мы используем файлы cookie, чтобы улучшить работу сайта.",
         "accept": "Принять все", "privacy": "Политика конфиденциальности", "terms": "Условия использования",
         "author": "Ольга Смирнова"},
    ),
    LanguagePack(
        "ja", "shift_jis", False, "日々の手帖", "hibi-no-techou.jp",
        ("私の隣人", "近所のパン屋さん", "私たちのクラブ", "兄", "村の先生", "初心者の人", "田中さん", "佐藤さん",
         "娘", "庭師さん"),
        ("新しいトマトを植えます", "焼きたてのパンを作ります", "古い自転車を修理します", "よく市場に出かけます",
         "野菜のスープを作ります", "本を読みます", "ベランダの花に水をやります", "山へのハイキングを計画します",
         "古い絵はがきを集めています", "地元の新聞に手紙を書きます", "廊下の壁を塗ります", "カフェで友達と会います"),
        ("天気の良い日に", "仕事の後で", "とても丁寧に", "何年も前から", "迷わずに", "子どもたちと一緒に",
         "雨の日でも", "日曜日の朝に"),
        ("今年の天気は特に穏やかでした。", "多くの読者からレシピについて質問がありました。",
         "秋は庭仕事に一番良い季節です。", "朝早く始めるのがおすすめです。", "子どもたちはとても楽しそうでした。",
         "次の集まりが今から楽しみです。", "すべてがすぐにうまくいったわけではありませんが、多くのことを学びました。",
         "一日の終わりには、みんな疲れていましたが満足していました。"),
        ("週末の庭仕事", "秋のためのヒント", "祖母の野菜スープ", "昔ながらのパン作り", "近所の市場を訪ねて"),
        {"nav": "ホーム|記事|ガイド|イベント|私たちについて|お問い合わせ", "popular": "人気の記事",
         "newsletter": "ニュースレター", "newsletter_text": "毎週金曜日に最新の記事をお届けします。",
         "subscribe": "登録する", "rights": "無断転載を禁じます。", "by": "文：",
         "cookies": "当サイトでは、利便性向上のためにクッキーを使用しています。",
         "accept": "すべて許可", "privacy": "プライバシーポリシー", "terms": "利用規約", "author": "山本 花子"},
        pattern="{subject}は{adverbial}{predicate}。",
    ),
)
ENGLISH_CHROME = {
    "nav": "Home|Articles|Guides|Events|About us|Contact", "popular": "Popular posts",
    "newsletter": "Newsletter", "newsletter_text": "Get the best stories in your inbox every Friday.",
    "subscribe": "Subscribe", "rights": "All rights reserved.", "by": "By",
    "cookies": "We use cookies to personalise content and to analyse our traffic. Read our cookie policy.",
    "accept": "Accept all", "privacy": "Privacy policy", "terms": "Terms of use",
}
AUTHORS = ("Maria Lopez", "James Whitfield", "Aisha Rahman", "Peter Novak", "Grace Chen", "Owen Davies")


def _foreign_paragraphs(pack: LanguagePack, rng: random.Random, count: int) -> list[str]:
    """`count` paragraphs of two made-up sentences and one whole sentence, repeating no phrase early."""
    subjects, predicates, adverbials, whole = (_shuffled_cycle(items, rng) for items in (
        pack.subjects, pack.predicates, pack.adverbials, pack.sentences))
    paragraphs = []
    for _ in range(count):
        sentences = [
            _capitalize(pack.pattern.format(
                subject=next(subjects), predicate=next(predicates), adverbial=next(adverbials)))
            for _ in range(2)
        ]
        sentences.insert(rng.randint(0, 2), next(whole))
        paragraphs.append(("" if pack.code == "ja" else " ").join(sentences))
    return paragraphs


def _shuffled_cycle(items: tuple[str, ...], rng: random.Random):
    """Yield `items` in a random order, reshuffled after each full pass."""
    pool = list(items)
    while True:
        rng.shuffle(pool)
        yield from pool


# --- HTML ------------------------------------------------------------------------------------------


@dataclass
class Page:
    """One planted URL before it is written: what the server answered and what it is."""

    url: str
    kind: str
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()
    language: str | None = None
    duplicate_of: str | None = None
    pii: dict[str, list[str]] | None = None


def _page_html(
    *, lang: str, site: str, chrome: dict[str, str], title: str, author: str, date: str, body_html: str,
    popular: list[str], meta_charset: str = "utf-8",
) -> str:
    """A full page: head, header with nav, the article, a sidebar, a footer and a cookie banner."""
    e = html.escape
    nav = "".join(
        f'<li><a href="/{"" if i == 0 else f"section-{i}/"}">{e(item)}</a></li>'
        for i, item in enumerate(chrome["nav"].split("|"))
    )
    popular_items = "".join(f'<li><a href="/posts/{i}/">{e(item)}</a></li>' for i, item in enumerate(popular))
    byline = f'<p class="byline">{e(chrome["by"])} {e(author)}, <span class="date">{e(date)}</span></p>'
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="{meta_charset}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} | {e(site)}</title>
<link rel="stylesheet" href="/static/css/main.css">
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}}</script>
</head>
<body class="post-template">
<header class="site-header">
<a class="logo" href="/">{e(site)}</a>
<nav class="main-nav" aria-label="Main"><ul>{nav}</ul></nav>
<form class="search" action="/search"><input type="search" name="q"></form>
</header>
<main class="content">
<article class="post">
<h1 class="post-title">{e(title)}</h1>
{byline}
{body_html}
</article>
<aside class="sidebar">
<section class="widget"><h3>{e(chrome["popular"])}</h3><ul>{popular_items}</ul></section>
<section class="widget newsletter"><h3>{e(chrome["newsletter"])}</h3><p>{e(chrome["newsletter_text"])}</p>
<form action="/subscribe"><input type="email" name="email"><button>{e(chrome["subscribe"])}</button></form></section>
</aside>
</main>
<footer class="site-footer">
<ul class="footer-links"><li><a href="/privacy/">{e(chrome["privacy"])}</a></li>
<li><a href="/terms/">{e(chrome["terms"])}</a></li></ul>
<p class="copyright">© 2024 {e(site)}. {e(chrome["rights"])}</p>
</footer>
<div class="cookie-banner" id="cookie-consent"><p>{e(chrome["cookies"])}</p><button>{e(chrome["accept"])}</button></div>
</body>
</html>
"""


def _paragraphs_html(paragraphs: list[str], subheading: str | None = None) -> str:
    parts = [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    if subheading and len(parts) > 3:
        parts.insert(3, f"<h2>{html.escape(subheading)}</h2>")
    return "\n".join(parts)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# --- Page kinds ------------------------------------------------------------------------------------


class _PageMaker:
    """Builds one Page per kind from a seeded random generator."""

    def __init__(self, rng: random.Random, date: str) -> None:
        self.rng, self.date = rng, date
        self.serial = 0

    def _url(self, host: str, title: str) -> str:
        self.serial += 1
        return f"https://{host}/{2024 - self.serial % 3}/{self.serial % 12 + 1:02d}/{_slug(title)}-{self.serial}/"

    def _english(self, paragraphs: int | None = None) -> tuple[Topic, str, list[str]]:
        topic = self.rng.choice(TOPICS)
        writer = _EnglishWriter(topic, self.rng)
        count = paragraphs if paragraphs is not None else self.rng.randint(6, 7)
        return topic, writer.title(), writer.paragraphs(count)

    def _english_html(self, topic: Topic, title: str, body_html: str) -> str:
        popular = [_EnglishWriter(topic, self.rng).title() for _ in range(4)]
        return _page_html(
            lang="en", site=topic.site, chrome=ENGLISH_CHROME, title=title, author=self.rng.choice(AUTHORS),
            date=self.date, body_html=body_html, popular=popular,
        )

    def article(self, kind: str = "clean", host: str | None = None) -> Page:
        topic, title, paragraphs = self._english()
        body = _paragraphs_html(paragraphs, self.rng.choice(ENGLISH_SUBHEADINGS))
        page_html = self._english_html(topic, title, body)
        return Page(self._url(host or topic.host, title), kind, body=page_html.encode(), language="en")

    def clean(self) -> Page:
        return self.article()

    def blocked_url(self) -> Page:
        host = self.rng.choice(BLOCKED_HOSTS + ("www.weekend-video-example.com",))
        page = self.article("blocked_url", host)
        if not host.startswith(BLOCKED_HOSTS):  # an innocent host: the banned word is in the path
            page.url = page.url.replace(f"https://{host}/", f"https://{host}/free-porn-xxx/")
        return page

    def spam(self) -> Page:
        product = self.rng.choice(("replica watches", "diet pills", "payday loans", "designer sneakers"))
        title = f"Cheap {product.title()} Best Price Online"
        line = f"Buy cheap {product} online, best {product} price, free shipping, order {product} now."
        stuffing = ", ".join(f"{adj} {product}" for adj in ("cheap", "best", "discount", "top", "buy", "sale") * 4)
        paragraphs = [f"Welcome to the best shop for {product} on the internet."] + [line] * 14 + [stuffing]
        topic = self.rng.choice(TOPICS)
        page_html = self._english_html(topic, title, _paragraphs_html(paragraphs))
        return Page(self._url(f"best-{_slug(product)}-deals.com", title), "spam", body=page_html.encode(),
                    language="en")

    def short(self) -> Page:
        topic = self.rng.choice(TOPICS)
        title = self.rng.choice(("Photos from the spring fair", "Opening hours", "Thank you"))
        body = _paragraphs_html([f"The photos from {self.rng.choice(topic.places)} are now online."])
        return Page(self._url(topic.host, title), "short", body=self._english_html(topic, title, body).encode(),
                    language="en")

    def boilerplate_only(self) -> Page:
        topic = self.rng.choice(TOPICS)
        links = "".join(
            f'<li><a href="/posts/{i}/">{html.escape(_EnglishWriter(topic, self.rng).title())}</a></li>'
            for i in range(12)
        )
        pager = '<nav class="pagination"><a href="?page=1">Previous</a> <a href="?page=2">1</a> ' \
                '<a href="?page=3">2</a> <a href="?page=4">Next</a></nav>'
        body = f'<ul class="archive-list">{links}</ul>{pager}'
        title = f"Archive: page {self.rng.randint(2, 40)}"
        return Page(self._url(topic.host, title), "boilerplate_only",
                    body=self._english_html(topic, title, body).encode(), language="en")

    def pii(self) -> Page:
        topic, title, paragraphs = self._english()
        first, second = self.rng.sample(("jane.doe", "k.mueller", "events", "t.okafor", "membership"), 2)
        emails = [f"{first}@{topic.host}", f"{second}@mailbox-example.net"]
        public = [self._public_ip(4), self._public_ip(6)]
        private = [f"10.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}",
                   f"192.168.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"]
        paragraphs.insert(2, (
            f"For questions about the next meeting, write to {emails[0]} or to our coordinator at {emails[1]}. "
            f"The photo archive is hosted on our server at {public[0]}, and a mirror answers at {public[1]}. "
            f"Inside the club house, the shared printer sits at {private[0]} and the router at {private[1]}."
        ))
        page_html = self._english_html(topic, title, _paragraphs_html(paragraphs))
        return Page(self._url(topic.host, title), "pii", body=page_html.encode(), language="en",
                    pii={"emails": emails, "public_ips": public, "private_ips": private})

    def _public_ip(self, version: int) -> str:
        while True:
            if version == 4:
                address = ipaddress.IPv4Address(self.rng.getrandbits(32))
            else:  # inside 2000::/3, the globally routed unicast space
                address = ipaddress.IPv6Address((0x2 << 125) | self.rng.getrandbits(125))
            if address.is_global and not address.is_multicast:
                return str(address)

    def code_page(self) -> Page:
        topic, _, paragraphs = self._english(paragraphs=4)
        title = "Building a Small Route Planner for " + topic.site
        code = (
            "function totalDistance(route) {\n  let sum = 0;\n  for (const leg of route.legs) {\n"
            "    sum += leg.km;\n  }\n  return sum;\n}\n"
            "document.querySelector('#planner').addEventListener('click', () => {\n"
            "  console.log(totalDistance({ legs: [{ km: 12 }, { km: 8 }] }));\n});"
        )
        body = "\n".join([
            _paragraphs_html(paragraphs[:2]),
            "<p>Paste the JavaScript below into the page and call it with an object such as "
            "{ legs: [] } to check that it works.</p>",
            f"<pre><code class=\"language-javascript\">{html.escape(code)}</code></pre>",
            _paragraphs_html(paragraphs[2:]),
        ])
        return Page(self._url(topic.host, title), "code_page", body=self._english_html(topic, title, body).encode(),
                    language="en")

    def non_english(self, pack: LanguagePack) -> Page:
        title = self.rng.choice(pack.titles)
        paragraphs = _foreign_paragraphs(pack, self.rng, self.rng.randint(4, 5))
        popular = self.rng.sample(pack.titles, 3)
        meta_charset = "Shift_JIS" if pack.charset == "shift_jis" else pack.charset
        page_html = _page_html(
            lang=pack.code, site=pack.site, chrome=pack.chrome, title=title, author=pack.chrome["author"],
            date=self.date, body_html=_paragraphs_html(paragraphs), popular=popular, meta_charset=meta_charset,
        )
        body = page_html.encode(pack.charset, errors="xmlcharrefreplace")
        content_type = f"text/html; charset={pack.charset}" if pack.charset_in_header else "text/html"
        self.serial += 1
        url = f"https://{pack.host}/blog/{self.serial}.html"
        return Page(url, "non_english", body=body, content_type=content_type, language=pack.code)

    def non_html(self) -> Page:
        topic = self.rng.choice(TOPICS)
        self.serial += 1
        return Page(f"https://{topic.host}/images/photo-{self.serial}.png", "non_html",
                    body=_tiny_png(self.rng), content_type="image/png")

    def not_found(self) -> Page:
        topic = self.rng.choice(TOPICS)
        body = _paragraphs_html(["Sorry, the page you were looking for does not exist."])
        page_html = self._english_html(topic, "Page not found", body)
        self.serial += 1
        return Page(f"https://{topic.host}/old-page-{self.serial}.html", "not_found", status=404,
                    body=page_html.encode())

    def redirect(self, target: str) -> Page:
        self.serial += 1
        body = f'<html><body>Moved to <a href="{html.escape(target)}">here</a>.</body></html>'.encode()
        return Page(f"{target.rstrip('/')}-old-{self.serial}", "redirect", status=301, body=body,
                    extra_headers=(("Location", target),))

    def exact_duplicate(self, original: Page) -> Page:
        self.serial += 1
        path = urlsplit(original.url).path
        return Page(f"https://news-digest-example.com/syndicated/{self.serial}{path}", "exact_duplicate",
                    body=original.body, language="en", duplicate_of=original.url)

    def near_duplicate(self, original: Page) -> Page:
        text = original.body.decode()
        start, end = text.index("<h1"), text.index("</article>")
        changed = _change_words(text[start:end], self.rng, fraction=0.05)
        self.serial += 1
        url = original.url.rstrip("/") + f"-updated-{self.serial}/"
        return Page(url, "near_duplicate", body=(text[:start] + changed + text[end:]).encode(), language="en",
                    duplicate_of=original.url)


def _change_words(fragment: str, rng: random.Random, fraction: float) -> str:
    """Replace about `fraction` of the words of the <p> texts in `fragment`, in two runs of adjacent words."""
    paragraphs = re.findall(r"<p>(.*?)</p>", fragment)
    words = [(i, j) for i, p in enumerate(paragraphs) for j in range(len(p.split(" ")))]
    run = max(1, round(len(words) * fraction / 2))
    split_words = [p.split(" ") for p in paragraphs]
    for start in rng.sample(range(len(words) - run), 2):
        for i, j in words[start : start + run]:
            token = split_words[i][j]
            core = token.rstrip(".,?!;:")
            replacement = rng.choice(REPLACEMENT_WORDS)
            split_words[i][j] = (_capitalize(replacement) if core[:1].isupper() else replacement) + token[len(core):]
    for old, new in zip(paragraphs, split_words, strict=True):
        fragment = fragment.replace(f"<p>{old}</p>", f"<p>{' '.join(new)}</p>", 1)
    return fragment


def _tiny_png(rng: random.Random) -> bytes:
    """A valid 8x8 RGB PNG of random colour noise."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rng.getrandbits(8) for _ in range(8 * 3)) for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _plan_pages(total: int, rng: random.Random, date: str) -> list[Page]:
    """All pages of the crawl: planted kinds first (each at least once), clean pages for the rest."""
    maker = _PageMaker(rng, date)
    planted = list(KIND_SHARES)  # one of each first, so small crawls still see every kind
    planted += [kind for kind, share in KIND_SHARES.items() for _ in range(max(0, round(total * share) - 1))]
    planted = planted[: total // 2]
    clean = [maker.clean() for _ in range(total - len(planted))]
    pages = list(clean)
    languages = itertools.cycle(LANGUAGES)
    for kind in planted:
        if kind == "non_english":
            pages.append(maker.non_english(next(languages)))
        elif kind in ("exact_duplicate", "near_duplicate"):
            pages.append(getattr(maker, kind)(rng.choice(clean)))
        elif kind == "redirect":
            pages.append(maker.redirect(rng.choice(clean).url))
        else:
            pages.append(getattr(maker, kind)())
    rng.shuffle(pages)
    return pages


# --- WARC writing ----------------------------------------------------------------------------------


def warc_record(warc_type: str, headers: list[tuple[str, str]], block: bytes) -> bytes:
    """One WARC/1.1 record (uncompressed): the version line, `headers`, Content-Length, the block."""
    lines = [f"WARC/1.1\r\nWARC-Type: {warc_type}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    lines.append(f"Content-Length: {len(block)}\r\n\r\n")
    return "".join(lines).encode() + block + b"\r\n\r\n"


def http_response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 response as a WARC response record stores it."""
    reasons = {200: "OK", 301: "Moved Permanently", 404: "Not Found"}
    head = f"HTTP/1.1 {status} {reasons.get(status, 'Unknown')}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("latin-1") + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _digest(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _warc_date(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_warc(path: Path, pages: list[Page], rng: random.Random, start: dt.datetime) -> None:
    new_id = lambda: f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"  # noqa: E731 - seeded
    info_id = new_id()
    info = f"software: crawl2chat sample crawl\r\nformat: WARC File Format 1.1\r\nisPartOf: {path.name}\r\n"
    members = [warc_record("warcinfo", [
        ("WARC-Date", _warc_date(start)), ("WARC-Filename", path.name), ("WARC-Record-ID", info_id),
        ("Content-Type", "application/warc-fields"),
    ], info.encode())]
    moment = start
    for page in pages:
        moment += dt.timedelta(seconds=rng.randint(1, 90))
        parts = urlsplit(page.url)
        request = (f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                   f"Host: {parts.netloc}\r\nUser-Agent: crawl2chat-sample/1.0\r\n"
                   f"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n\r\n").encode()
        response = http_response(page.status, [
            ("Date", moment.strftime("%a, %d %b %Y %H:%M:%S GMT")), ("Server", "nginx"),
            ("Content-Type", page.content_type), *page.extra_headers,
        ], page.body)
        request_id, response_id = new_id(), new_id()
        address = f"198.51.100.{rng.randint(1, 254)}"
        common = [("WARC-Date", _warc_date(moment)), ("WARC-Warcinfo-ID", info_id), ("WARC-IP-Address", address),
                  ("WARC-Target-URI", page.url)]
        members.append(warc_record("request", [
            ("WARC-Record-ID", request_id), *common, ("Content-Type", "application/http; msgtype=request"),
            ("WARC-Block-Digest", _digest(request)),
        ], request))
        members.append(warc_record("response", [
            ("WARC-Record-ID", response_id), *common, ("WARC-Concurrent-To", request_id),
            ("Content-Type", "application/http; msgtype=response"), ("WARC-Payload-Digest", _digest(page.body)),
            ("WARC-Block-Digest", _digest(response)),
            ("WARC-Identified-Payload-Type", page.content_type.split(";")[0]),
        ], response))
    # One gzip member per record, as Common Crawl writes them; mtime=0 keeps the bytes reproducible.
    path.write_bytes(b"".join(gzip.compress(member, compresslevel=6, mtime=0) for member in members))


def _snapshot_start(snapshot: str) -> dt.datetime:
    year, week = map(int, SNAPSHOT_ID.fullmatch(check_snapshot_id(snapshot)).groups())
    return dt.datetime.combine(dt.date.fromisocalendar(year, week, 1), dt.time(), dt.UTC)


def generate_sample_crawl(
    output_dir: str | Path,
    num_warcs: int = 2,
    pages_per_warc: int = 60,
    seed: int = 0,
    snapshot: str = "CC-MAIN-2024-51",
) -> SampleCrawl:
    """Write `num_warcs` WARC files of `pages_per_warc` responses each, and truth.json, into `output_dir`.

    Every planted kind appears at least once when there are at least 24 pages in all.
    """
    if num_warcs < 1 or pages_per_warc < 1:
        raise ValueError("num_warcs and pages_per_warc must be at least 1")
    start = _snapshot_start(snapshot)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pages = _plan_pages(num_warcs * pages_per_warc, rng, start.date().isoformat())
    warc_paths = []
    for index in range(num_warcs):
        path = output / f"{snapshot}-sample-{index:05d}.warc.gz"
        _write_warc(path, pages[index * pages_per_warc : (index + 1) * pages_per_warc], rng,
                    start + dt.timedelta(hours=index))
        warc_paths.append(path)
    crawl = SampleCrawl(
        warc_paths=warc_paths,
        truth_path=output / "truth.json",
        truth={page.url: page.kind for page in pages},
        languages={page.url: page.language for page in pages if page.language},
        duplicate_of={page.url: page.duplicate_of for page in pages if page.duplicate_of},
        pii={page.url: page.pii for page in pages if page.pii},
    )
    truth = {"snapshot": snapshot, "kinds": crawl.truth, "languages": crawl.languages,
             "duplicate_of": crawl.duplicate_of, "pii": crawl.pii}
    crawl.truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return crawl
