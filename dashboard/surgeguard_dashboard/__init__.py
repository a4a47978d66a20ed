"""The operator dashboard: a Streamlit app over the controller's HTTP API.

``client`` is the only module that speaks HTTP; ``model`` (with ``jsonread`` and
``health``) turns the API's JSON into typed records; ``feed`` keeps the last data of one
browser session; ``summary``, ``why`` (the controller's last move, the bottleneck's hold,
a failing tick, a replica that does not obey), ``figures``, ``bands`` (the bottleneck's
names over time), ``jobs`` and ``door`` (rejections by reason, the penalty box) are pure
(data in, numbers, sentences or Plotly figures out), the figures sharing ``timeplot``
(what every time chart has in common) and ``palette`` (one colour and dash per series);
``strip``, ``views`` and ``actions`` draw them; ``app`` is the script ``streamlit run``
executes.
"""

from surgeguard.extras import require

require("surgeguard_dashboard", "dashboard", "streamlit", "plotly", "httpx")
