"""Trust across cities: the prefecture CA, cities' hub credentials, revocation.

The prefecture side (:class:`PrefectureHome`) keeps the CA, signs the hub
servers' certificates and each city's credential, and keeps the roster of
admitted and revoked cities that the hub's NATS configuration
(:func:`render_authorization`) and its consumer (:meth:`Roster.admitted`) read.
The city side (:func:`plan_join`, :func:`join_hub`) imports a credential into the
city HQ's home and pins the prefecture CA.
"""

from __future__ import annotations

from meshdesk.prefecture.ca import (
    CityCert,
    PrefectureCA,
    city_cert_info,
    municipality_code,
    prefecture_id,
    verify_city_cert,
    verify_server_cert,
)
from meshdesk.prefecture.city import CityHubFiles, JoinPlan, join_hub, load_city_hub, plan_join
from meshdesk.prefecture.credential import HubCredential, check_hub_url
from meshdesk.prefecture.home import PREFECTURE_HOME_ENV, PrefectureHome, ServerFiles
from meshdesk.prefecture.nats import (
    NO_CITY_USER,
    admitted_users,
    render_authorization,
    render_tls,
)
from meshdesk.prefecture.roster import CityEntry, Roster

__all__ = [
    "NO_CITY_USER",
    "PREFECTURE_HOME_ENV",
    "CityCert",
    "CityEntry",
    "CityHubFiles",
    "HubCredential",
    "JoinPlan",
    "PrefectureCA",
    "PrefectureHome",
    "Roster",
    "ServerFiles",
    "admitted_users",
    "check_hub_url",
    "city_cert_info",
    "join_hub",
    "load_city_hub",
    "municipality_code",
    "plan_join",
    "prefecture_id",
    "render_authorization",
    "render_tls",
    "verify_city_cert",
    "verify_server_cert",
]
