"""Voice-assistant requests generated from templates, deterministically from a seed.

Domains: timers and alarms, music, weather, shopping lists, smart home, calls and messages,
reminders and calendar, and general questions. Slots are filled from word lists with several
hundred distinct words (first names, artists, song titles, US cities, groceries, devices, rooms,
topics), so a recognizer trained on the corpus has to generalize beyond a closed phrase book.

Transcripts are lowercase words separated by single spaces, without punctuation (apostrophes
inside words such as ``what's`` are kept). Numbers are written as words.

Example::

    rng = np.random.default_rng([1234, 7])
    generate_request(rng)   # -> Request(domain="timer", text="set a timer for twenty five minutes")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DOMAINS",
    "OPEN_SLOTS",
    "SLOT_LISTS",
    "Request",
    "generate_request",
    "generate_requests",
    "number_to_words",
    "vocabulary",
]

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_to_words(n: int) -> str:
    """Spell a non-negative integer below one million in English words.

    >>> number_to_words(2045)
    'two thousand forty five'
    """
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_to_words supports 0..999999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    thousands, rest = divmod(n, 1000)
    return (number_to_words(thousands) + " thousand"
            + ("" if rest == 0 else " " + number_to_words(rest)))


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.strip().split(",") if x.strip())


FIRST_NAMES = _words("""
james, mary, robert, patricia, john, jennifer, michael, linda, david, elizabeth, william, barbara,
richard, susan, joseph, jessica, thomas, sarah, charles, karen, christopher, lisa, daniel, nancy,
matthew, betty, anthony, margaret, mark, sandra, donald, ashley, steven, kimberly, paul, emily,
andrew, donna, joshua, michelle, kenneth, carol, kevin, amanda, brian, dorothy, george, melissa,
timothy, deborah, ronald, stephanie, edward, rebecca, jason, sharon, jeffrey, laura, ryan, cynthia,
jacob, kathleen, gary, amy, nicholas, angela, eric, shirley, jonathan, anna, stephen, brenda,
larry, pamela, justin, emma, scott, nicole, brandon, helen, benjamin, samantha, samuel, katherine,
gregory, christine, alexander, debra, frank, rachel, patrick, carolyn, raymond, janet, jack,
catherine, dennis, maria, jerry, heather, tyler, diane, aaron, ruth, jose, julie, adam, olivia,
nathan, joyce, henry, virginia, douglas, victoria, zachary, kelly, peter, lauren, kyle, christina,
ethan, joan, walter, evelyn, noah, judith, jeremy, megan, christian, andrea, keith, cheryl, roger,
hannah, terry, jacqueline, austin, martha, sean, gloria, gerald, teresa, carl, ann, harold, sara,
dylan, madison, arthur, frances, lawrence, kathryn, jordan, janice, jesse, jean, bryan, abigail,
billy, alice, bruce, judy, gabriel, sophia, joe, grace, logan, denise, alan, amber, juan, doris,
albert, marilyn, willie, danielle, elijah, beverly, wayne, isabella, randy, theresa, vincent,
diana, mason, natalie, roy, brittany, ralph, charlotte, bobby, marie, russell, kayla, bradley,
alexis, philip, lori, eugene, malik, aaliyah, deshawn, imani, keisha, tyrone, jamal, latoya,
andre, precious, winston, desmond, marcus, shanice, neville, claudette, fiona, ewan, callum,
morag, hamish, isla, angus, ailsa, rhys, gareth, bronwen, dylan, siobhan, niamh, declan, priya,
arjun, mei, wei, hiroshi, yuki, carlos, sofia, diego, lucia, mateo, valentina, omar, fatima
""")

ARTISTS = _words("""
taylor swift, the beatles, drake, adele, beyonce, ed sheeran, bruno mars, billie eilish,
kendrick lamar, rihanna, coldplay, the rolling stones, elton john, queen, fleetwood mac,
bob marley, johnny cash, dolly parton, willie nelson, miles davis, john coltrane, ella fitzgerald,
frank sinatra, aretha franklin, stevie wonder, prince, david bowie, madonna, whitney houston,
michael jackson, lady gaga, katy perry, harry styles, dua lipa, the weeknd, post malone,
olivia rodrigo, sza, lizzo, bad bunny, shakira, carlos santana, radiohead, arctic monkeys,
the killers, foo fighters, pearl jam, nirvana, green day, red hot chili peppers, metallica,
led zeppelin, pink floyd, the eagles, bruce springsteen, tom petty, neil young, joni mitchell,
bob dylan, simon and garfunkel, paul simon, norah jones, john legend, alicia keys, usher,
outkast, kanye west, jay z, nicki minaj, missy elliott, lauryn hill, erykah badu, frank ocean,
tyler the creator, chris stapleton, luke combs, carrie underwood, kacey musgraves, zach bryan,
morgan wallen, the chicks, brandi carlile, mumford and sons, the lumineers, imagine dragons,
maroon five, one direction, the black keys, vampire weekend, lana del rey, lorde, sia,
hozier, florence and the machine, amy winehouse, sam smith, lewis capaldi, the proclaimers,
franz ferdinand, simple minds, the cure, oasis, blur, the smiths, arcade fire, bon iver,
phoebe bridgers, mitski, janelle monae, chance the rapper, sean paul, shaggy, damian marley
""")

SONGS = _words("""
yesterday, let it be, hey jude, bohemian rhapsody, hotel california, purple rain,
billie jean, thriller, like a rolling stone, imagine, respect, superstition, sweet caroline,
dancing queen, wonderwall, smells like teen spirit, stairway to heaven, hallelujah, jolene,
ring of fire, take me home country roads, piano man, rocket man, tiny dancer, shake it off,
blank space, love story, anti hero, cruel summer, rolling in the deep, someone like you,
hello, shape of you, perfect, thinking out loud, uptown funk, just the way you are,
bad guy, happier than ever, blinding lights, save your tears, levitating, drivers license,
flowers, as it was, watermelon sugar, umbrella, diamonds, halo, crazy in love,
single ladies, formation, hey ya, lose yourself, redemption song, three little birds,
no woman no cry, one love, is this love, could you be loved, jamming, buffalo soldier,
the chain, dreams, go your own way, landslide, fix you, yellow, viva la vida, clocks,
seven nation army, mr brightside, somebody told me, under pressure, don't stop me now,
we will rock you, heroes, space oddity, life on mars, i will always love you, greatest love of all,
my girl, stand by me, what a wonderful world, fly me to the moon, summertime, at last,
feeling good, a change is gonna come, lean on me, ain't no sunshine, let's stay together,
september, i wanna dance with somebody, take on me, africa, living on a prayer, born to run,
dancing in the dark, free falling, harvest moon, both sides now, blowing in the wind,
the sound of silence, bridge over troubled water, mrs robinson, the boxer, graceland
""")

GENRES = _words("""
jazz, blues, classical music, country, hip hop, reggae, rock and roll, heavy metal, folk music,
soul, gospel, funk, disco, salsa, bluegrass, indie rock, punk rock, lo fi beats, ambient music,
dance music, opera, piano music, acoustic guitar, eighties hits, nineties hits, oldies,
christmas music, soca, calypso, dancehall, celtic music, bagpipe music, chamber music,
movie soundtracks, video game music, relaxing music, workout music, dinner music, sleep sounds,
rain sounds, ocean waves, white noise, podcasts, the news, sports radio, public radio
""")

CITIES = _words("""
new york, los angeles, chicago, houston, phoenix, philadelphia, san antonio, san diego, dallas,
san jose, austin, jacksonville, fort worth, columbus, charlotte, indianapolis, san francisco,
seattle, denver, washington, nashville, oklahoma city, el paso, boston, portland, las vegas,
detroit, memphis, louisville, baltimore, milwaukee, albuquerque, tucson, fresno, sacramento,
kansas city, mesa, atlanta, omaha, colorado springs, raleigh, long beach, virginia beach, miami,
oakland, minneapolis, tulsa, bakersfield, wichita, arlington, aurora, tampa, new orleans,
cleveland, honolulu, anaheim, lexington, stockton, corpus christi, henderson, riverside, newark,
saint paul, santa ana, cincinnati, irvine, orlando, pittsburgh, saint louis, greensboro,
jersey city, anchorage, lincoln, plano, durham, buffalo, chandler, chula vista, toledo, madison,
gilbert, reno, fort wayne, north las vegas, saint petersburg, lubbock, irving, laredo,
winston salem, chesapeake, glendale, garland, scottsdale, norfolk, boise, fremont, spokane,
santa clarita, baton rouge, richmond, tacoma, san bernardino, modesto, fontana, des moines,
moreno valley,
santa fe, fayetteville, birmingham, rochester, salt lake city, savannah, charleston, asheville,
knoxville, chattanooga, burlington, portsmouth, providence, hartford, albany, syracuse, ann arbor,
grand rapids, green bay, duluth, fargo, sioux falls, billings, missoula, cheyenne, juneau,
fairbanks, santa barbara, san luis obispo, eugene, bend, flagstaff, sedona, key west,
fort lauderdale, west palm beach, gainesville, tallahassee, pensacola, mobile, jackson, little rock,
shreveport, galveston, amarillo, springfield, peoria, dayton, akron, wilmington, annapolis,
bangor, concord, montpelier, worcester, new haven, atlantic city, scranton, harrisburg, roanoke,
lynchburg, huntington, charleston west virginia, frankfort, bowling green, tuscaloosa, macon
""")

WEATHER_TIMES = _words("""
today, tonight, tomorrow, tomorrow morning, tomorrow afternoon, tomorrow night, this weekend,
this afternoon, this evening, on saturday, on sunday, on monday, on tuesday, on wednesday,
on thursday, on friday, next week, right now, later today, over the next hour
""")

WEATHER_QUESTIONS = (
    "what's the weather in {city} {when}",
    "what's the forecast for {city} {when}",
    "will it rain in {city} {when}",
    "is it going to snow in {city} {when}",
    "how hot will it get in {city} {when}",
    "how cold is it in {city} right now",
    "do i need an umbrella {when}",
    "what's the temperature outside",
    "is it windy in {city} {when}",
    "when is sunset in {city} {when}",
    "what time is sunrise {when}",
    "what's the humidity in {city}",
    "will there be thunderstorms in {city} {when}",
    "what's the air quality in {city} {when}",
    "should i bring a jacket to {city} {when}",
    "what's the pollen count {when}",
    "is there a hurricane warning for {city}",
    "how much snow did {city} get",
)

GROCERIES = _words("""
milk, eggs, bread, butter, cheese, yogurt, apples, bananas, oranges, grapes, strawberries,
blueberries, lemons, limes, avocados, tomatoes, potatoes, onions, garlic, carrots, celery,
broccoli, spinach, lettuce, cucumbers, peppers, mushrooms, zucchini, sweet potatoes, corn,
green beans, rice, pasta, flour, sugar, salt, black pepper, olive oil, vinegar, ketchup, mustard,
mayonnaise, peanut butter, jelly, honey, maple syrup, cereal, oatmeal, granola, coffee, tea,
orange juice, apple juice, sparkling water, soda, chicken breasts, ground beef, pork chops, bacon,
sausages, salmon, shrimp, tuna, turkey, ham, tofu, beans, lentils, chickpeas, canned tomatoes,
chicken broth, soup, crackers, chips, salsa, popcorn, pretzels, cookies, chocolate, ice cream,
frozen pizza, frozen peas, tortillas, bagels, muffins, paper towels, toilet paper, dish soap,
laundry detergent, trash bags, aluminum foil, plastic wrap, sponges, shampoo, conditioner,
toothpaste, toothbrushes, deodorant, sunscreen, band aids, batteries, light bulbs, dog food,
cat litter, diapers, baby wipes, birthday candles, napkins, paper plates, charcoal, plantains,
mangoes, pineapple, coconut milk, jerk seasoning, scallions, thyme, oats, haggis, shortbread,
scones, cream, marmalade, crumpets, baked beans, sour cream, cottage cheese, hot sauce, cinnamon
""")

LISTS = _words("""
shopping list, grocery list, to do list, packing list, christmas list, hardware list, party list,
camping list, birthday list
""")

ROOMS = _words("""
living room, kitchen, bedroom, master bedroom, guest room, bathroom, dining room, office,
basement, garage, hallway, nursery, kids room, den, attic, porch, patio, backyard, laundry room,
upstairs, downstairs, front yard
""")

DEVICES = _words("""
lights, lamp, ceiling fan, air conditioner, heater, thermostat, television, tv, speaker,
sound bar, coffee maker, dishwasher, washing machine, dryer, oven, microwave, robot vacuum,
air purifier, humidifier, dehumidifier, space heater, fireplace, garage door, front door lock,
back door lock, sprinklers, porch light, night light, christmas lights, string lights,
security camera, doorbell camera, blinds, curtains, water heater, electric blanket, fan
""")

COLORS = _words("""
red, orange, yellow, green, blue, purple, pink, white, warm white, cool white, daylight, teal,
turquoise, lavender, gold, amber, magenta, soft white
""")

CONTACTS_RELATIONS = _words("""
mom, dad, grandma, grandpa, my sister, my brother, my wife, my husband, my son, my daughter,
my boss, the office, the dentist, the doctor, the vet, my aunt, my uncle, my cousin, my neighbor
""")

MESSAGES = _words("""
i'm running late, i'll be there in ten minutes, call me when you get this, dinner is ready,
can you pick up the kids, don't forget the milk, happy birthday, i love you, see you soon,
the meeting moved to three, i'm on my way home, are you awake, thanks for everything,
good luck today, let me know when you land, the package arrived, can we talk later,
i left my keys at home, what time is practice, bring an umbrella, the game starts at seven,
traffic is terrible, save me a seat, i'm at the store do you need anything
""")

QUESTIONS = _words("""
how tall is mount everest, how far away is the moon, who wrote pride and prejudice,
who painted the mona lisa, what is the capital of australia, how many ounces are in a cup,
how many teaspoons are in a tablespoon, how do you spell necessary, what does ubiquitous mean,
who won the world series last year, when does daylight saving time end, how old is the universe,
what is the speed of light, how many miles is a marathon, what's the population of texas,
who is the president of france, what's the square root of one hundred forty four,
how do i make pancakes, how long do i boil an egg, what's a good recipe for chili,
what's on my calendar today, what time is it in tokyo, what time is it in london,
how do you say thank you in spanish, how do you say good morning in french, tell me a joke,
tell me a fun fact, what's the news today, who sings this song, what movies are playing tonight,
when does the pharmacy close, where is the nearest gas station, find a coffee shop nearby,
find an italian restaurant near me, how long is the drive to the airport, what's the traffic like,
how many calories are in an avocado, what is photosynthesis, why is the sky blue,
how does a rainbow form, what's the tallest building in the world, how deep is the ocean,
who invented the telephone, who discovered penicillin, what's the longest river in africa,
how many bones are in the human body, what's the boiling point of water,
how many feet are in a mile, what year did the first moon landing happen,
what's the difference between a crocodile and an alligator, do dogs dream,
how fast can a cheetah run, what's the largest planet, is pluto a planet,
what rhymes with orange, define serendipity, convert thirty celsius to fahrenheit
""")

REMINDERS = _words("""
take out the trash, call the plumber, pay the electric bill, water the plants, feed the cat,
walk the dog, pick up the dry cleaning, book a haircut, renew my passport, buy a birthday card,
take my medicine, check the oven, move the car, return the library books, email the landlord,
start the laundry, defrost the chicken, charge my phone, pack my lunch, schedule a checkup,
submit the report, cancel the gym membership, order more printer ink, change the air filter
""")

WEEKDAYS = _words("monday, tuesday, wednesday, thursday, friday, saturday, sunday")
MONTHS = _words("""january, february, march, april, may, june, july, august, september, october,
november, december""")
ORDINALS = _words("""first, second, third, fourth, fifth, sixth, seventh, eighth, ninth, tenth,
eleventh, twelfth, thirteenth, fourteenth, fifteenth, sixteenth, seventeenth, eighteenth,
nineteenth, twentieth, twenty first, twenty second, twenty third, twenty fourth, twenty fifth,
twenty sixth, twenty seventh, twenty eighth, twenty ninth, thirtieth, thirty first""")
TIMER_NAMES = _words("""pasta, pizza, eggs, cookies, laundry, tea, rice, bread, roast, chicken, nap,
homework, workout, meditation, parking meter, oven, cake, potatoes, steak, brownies""")


@dataclass(frozen=True)
class Request:
    """One generated request.

    Attributes:
        domain: the template family (``"timer"``, ``"music"``, ...).
        text: the transcript (lowercase words, numbers spelled out, no punctuation).
    """

    domain: str
    text: str


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _clock_time(rng: np.random.Generator) -> str:
    hour = int(rng.integers(1, 13))
    minute = int(rng.choice([0, 0, 0, 5, 10, 15, 15, 20, 25, 30, 30, 35, 40, 45, 45, 50, 55]))
    if minute == 0:
        base = number_to_words(hour) + _pick(rng, (" o'clock", "", ""))
    elif minute < 10:
        base = number_to_words(hour) + " oh " + number_to_words(minute)
    else:
        base = number_to_words(hour) + " " + number_to_words(minute)
    return base + _pick(rng, (" a m", " p m", " in the morning", " in the evening", " tonight", ""))


def _duration(rng: np.random.Generator) -> str:
    unit = _pick(rng, ("seconds", "minutes", "minutes", "minutes", "hours"))
    n = int(rng.integers(2, 100 if unit == "seconds" else (91 if unit == "minutes" else 13)))
    text = f"{number_to_words(n)} {unit}"
    if unit == "minutes" and rng.random() < 0.15:
        text = f"{number_to_words(int(rng.integers(1, 4)))} hours and {text}" if n < 60 else text
    if unit == "hours" and rng.random() < 0.2:
        text = f"{number_to_words(n)} and a half hours"
    return text


def _timer(rng: np.random.Generator) -> str:
    d = _duration(rng)
    return _pick(rng, (
        f"set a timer for {d}",
        f"start a {d} timer",
        f"set a {_pick(rng, TIMER_NAMES)} timer for {d}",
        f"how much time is left on the {_pick(rng, TIMER_NAMES)} timer",
        f"add {number_to_words(int(rng.integers(1, 16)))} minutes to the timer",
        f"cancel the {_pick(rng, TIMER_NAMES)} timer",
        f"remind me in {d} to {_pick(rng, REMINDERS)}",
        f"set a timer for {d} called {_pick(rng, TIMER_NAMES)}",
        "pause the timer",
    ))


def _alarm(rng: np.random.Generator) -> str:
    t = _clock_time(rng)
    day = _pick(rng, WEEKDAYS)
    return _pick(rng, (
        f"set an alarm for {t}",
        f"wake me up at {t}",
        f"set an alarm for {t} on {day}",
        f"set a recurring alarm every {day} at {t}",
        f"change my {day} alarm to {t}",
        f"snooze for {number_to_words(int(rng.integers(2, 31)))} minutes",
        "turn off all my alarms",
        f"what alarms do i have {_pick(rng, ('tomorrow', 'this week', 'on ' + day))}",
        f"delete the alarm for {t}",
    ))


_PLAYLISTS = ("workout", "dinner", "road trip", "morning", "sleep", "party")


def _music(rng: np.random.Generator) -> str:
    artist, song = _pick(rng, ARTISTS), _pick(rng, SONGS)
    genre, room = _pick(rng, GENRES), _pick(rng, ROOMS)
    return _pick(rng, (
        f"play {song} by {artist}",
        f"play some {genre}",
        f"play {artist}",
        f"play the latest album by {artist}",
        f"play {song}",
        f"play {genre} in the {room}",
        f"shuffle songs by {artist}",
        f"add {song} to my playlist",
        f"who sings {song}",
        f"play my {_pick(rng, _PLAYLISTS)} playlist",
        f"turn the volume up to {number_to_words(int(rng.integers(1, 11)))}",
        "skip this song",
        f"play something like {artist}",
        f"play {artist} radio on the {room} speaker",
        "what's the name of this song",
    ))


def _weather(rng: np.random.Generator) -> str:
    template = _pick(rng, WEATHER_QUESTIONS)
    return template.format(city=_pick(rng, CITIES), when=_pick(rng, WEATHER_TIMES))


def _shopping(rng: np.random.Generator) -> str:
    a, b = _pick(rng, GROCERIES), _pick(rng, GROCERIES)
    lst = _pick(rng, LISTS)
    n = number_to_words(int(rng.integers(2, 13)))
    return _pick(rng, (
        f"add {a} to my {lst}",
        f"add {a} and {b} to the {lst}",
        f"put {n} {a} on the {lst}",
        f"remove {a} from my {lst}",
        f"what's on my {lst}",
        f"do i have {a} on my {lst}",
        f"clear my {lst}",
        f"order more {a}",
        f"reorder {a} and {b}",
        f"how much does a pound of {a} cost",
    ))


_APPLIANCES = ("robot vacuum", "dishwasher", "washing machine", "dryer", "coffee maker")


def _smart_home(rng: np.random.Generator) -> str:
    device, room = _pick(rng, DEVICES), _pick(rng, ROOMS)
    temp = number_to_words(int(rng.integers(60, 80)))
    pct = number_to_words(int(rng.choice([10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100])))
    return _pick(rng, (
        f"turn on the {room} {device}",
        f"turn off the {device} in the {room}",
        f"switch off the {room} {device}",
        f"dim the {room} lights to {pct} percent",
        f"set the thermostat to {temp} degrees",
        f"make the {room} lights {_pick(rng, COLORS)}",
        f"is the {device} on",
        f"lock the {_pick(rng, ('front door', 'back door', 'garage door', 'side door'))}",
        f"set the {room} to {temp} degrees",
        f"turn the heat up by {number_to_words(int(rng.integers(1, 6)))} degrees",
        f"start the {_pick(rng, _APPLIANCES)}",
        f"turn on the {device} at {_clock_time(rng)}",
        f"close the {room} blinds",
        f"turn everything off in the {room}",
    ))


def _communication(rng: np.random.Generator) -> str:
    name, other = _pick(rng, FIRST_NAMES), _pick(rng, CONTACTS_RELATIONS)
    who = name if rng.random() < 0.7 else other
    msg = _pick(rng, MESSAGES)
    return _pick(rng, (
        f"call {who}",
        f"call {who} on speaker",
        f"video call {who}",
        f"text {who} {msg}",
        f"send a message to {who} saying {msg}",
        f"read my messages from {who}",
        f"did {name} call me",
        f"call {name} {_pick(rng, FIRST_NAMES)}",
        f"tell {who} {msg}",
        f"what's {name}'s phone number",
        f"drop in on the {_pick(rng, ROOMS)}",
        f"announce {msg}",
    ))


def _calendar(rng: np.random.Generator) -> str:
    t, day = _clock_time(rng), _pick(rng, WEEKDAYS)
    date = f"{_pick(rng, MONTHS)} {_pick(rng, ORDINALS)}"
    return _pick(rng, (
        f"remind me to {_pick(rng, REMINDERS)} at {t}",
        f"remind me to {_pick(rng, REMINDERS)} on {day}",
        f"add lunch with {_pick(rng, FIRST_NAMES)} to my calendar on {day}",
        f"schedule a meeting with {_pick(rng, FIRST_NAMES)} on {date} at {t}",
        f"what's on my calendar {_pick(rng, ('today', 'tomorrow', 'on ' + day, 'next week'))}",
        f"when is {_pick(rng, FIRST_NAMES)}'s birthday",
        f"how many days until {date}",
        f"what day of the week is {date}",
        f"move my dentist appointment to {day} at {t}",
        f"cancel my {t} meeting",
    ))


def _question(rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        a, b = int(rng.integers(2, 100)), int(rng.integers(2, 100))
        op = _pick(rng, ("plus", "minus", "times", "divided by"))
        return f"what's {number_to_words(a)} {op} {number_to_words(b)}"
    if rng.random() < 0.1:
        year = int(rng.integers(1950, 2031))
        return f"who won the super bowl in {_year_words(year)}"
    return _pick(rng, QUESTIONS)


def _year_words(year: int) -> str:
    hi, lo = divmod(year, 100)
    if hi == 20 and lo < 10:
        return number_to_words(year)
    if lo == 0:
        return number_to_words(hi) + " hundred"
    return number_to_words(hi) + (" oh " if lo < 10 else " ") + number_to_words(lo)


_WAKE_WORDS = ("hey computer ", "okay assistant ", "hey assistant ")
_POLITE = ("please ", "can you ", "could you ", "would you ")
_IMPERATIVES = frozenset([
    "set", "start", "add", "cancel", "remind", "pause", "wake", "change", "snooze", "turn",
    "delete", "play", "shuffle", "skip", "put", "remove", "clear", "order", "reorder", "switch",
    "dim", "make", "lock", "close", "call", "video", "text", "send", "read", "tell", "announce",
    "drop", "schedule", "move",
])

DOMAINS: dict[str, tuple[float, Callable[[np.random.Generator], str]]] = {
    "timer": (0.12, _timer),
    "alarm": (0.10, _alarm),
    "music": (0.16, _music),
    "weather": (0.14, _weather),
    "shopping": (0.11, _shopping),
    "smart_home": (0.14, _smart_home),
    "communication": (0.10, _communication),
    "calendar": (0.07, _calendar),
    "question": (0.06, _question),
}
"""domain name → (probability, generator)."""


def generate_request(rng: np.random.Generator) -> Request:
    """Draw one request.

    Args:
        rng: numpy generator; the same generator state always gives the same request.

    Returns:
        A :class:`Request` with a normalized transcript.
    """
    names = list(DOMAINS)
    probs = np.array([DOMAINS[n][0] for n in names])
    domain = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    text = DOMAINS[domain][1](rng)
    if text.split()[0] in _IMPERATIVES and rng.random() < 0.3:
        text = _pick(rng, _POLITE) + text
    if rng.random() < 0.2:
        text = _pick(rng, _WAKE_WORDS) + text
    text = " ".join(text.replace("-", " ").split())
    return Request(domain=domain, text=text)


def generate_requests(n: int, seed: int) -> list[Request]:
    """``n`` requests; request ``i`` depends only on ``(seed, i)``."""
    return [generate_request(np.random.default_rng([seed, i])) for i in range(n)]


OPEN_SLOTS: dict[str, tuple[str, ...]] = {
    "first_name": FIRST_NAMES,
    "artist": ARTISTS,
    "song": SONGS,
    "city": CITIES,
    "grocery": GROCERIES,
}
"""The open-vocabulary slots (slot name → values): long lists of names, titles and places that
a recognizer should handle beyond the values it was trained on (first names are also the
contacts of calls and messages). The other lists are small closed sets (rooms, devices, colors,
weekdays, relations such as ``mom``) or whole phrases (messages, questions, reminders)."""

SLOT_LISTS: tuple[tuple[str, ...], ...] = (
    FIRST_NAMES, ARTISTS, SONGS, GENRES, CITIES, WEATHER_TIMES, GROCERIES, LISTS, ROOMS, DEVICES,
    COLORS, CONTACTS_RELATIONS, MESSAGES, QUESTIONS, REMINDERS, WEEKDAYS, MONTHS, ORDINALS,
    TIMER_NAMES,
)
"""Every word list the templates fill slots from (the open slots among them)."""


def vocabulary() -> frozenset[str]:
    """Every word that can appear in a slot list (a lower bound on the generator's vocabulary)."""
    words: set[str] = set()
    for seq in (*SLOT_LISTS, _ONES, _TENS[2:]):
        for item in seq:
            words.update(item.split())
    return frozenset(words)
