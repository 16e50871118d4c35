"""The text of the sample crawl: hand-written vocabularies and a tiny grammar per language.

`EnglishWriter` turns topics, people, places and sentence templates into fresh, grammatical
English paragraphs (stop words, full sentences, varied lines), so that clean pages pass the
quality filters after extraction; `LANGUAGES` holds smaller packs for German, French, Spanish,
Russian and Japanese pages. Used only by `tasks/samples/crawl.py`, which builds pages and WARCs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass


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


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _title_case(text: str) -> str:
    small = {"a", "an", "and", "the", "to", "of", "in", "for", "on", "from"}
    words = text.split(" ")
    return " ".join(w if i and w.lower() in small else capitalize(w) for i, w in enumerate(words))


class EnglishWriter:
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
        return capitalize(A_BEFORE_VOWEL.sub(r"\1n ", filled))


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


def foreign_paragraphs(pack: LanguagePack, rng: random.Random, count: int) -> list[str]:
    """`count` paragraphs of two made-up sentences and one whole sentence, repeating no phrase early."""
    subjects, predicates, adverbials, whole = (shuffled_cycle(items, rng) for items in (
        pack.subjects, pack.predicates, pack.adverbials, pack.sentences))
    paragraphs = []
    for _ in range(count):
        sentences = [
            capitalize(pack.pattern.format(
                subject=next(subjects), predicate=next(predicates), adverbial=next(adverbials)))
            for _ in range(2)
        ]
        sentences.insert(rng.randint(0, 2), next(whole))
        paragraphs.append(("" if pack.code == "ja" else " ").join(sentences))
    return paragraphs


def shuffled_cycle(items: tuple[str, ...], rng: random.Random):
    """Yield `items` in a random order, reshuffled after each full pass."""
    pool = list(items)
    while True:
        rng.shuffle(pool)
        yield from pool
