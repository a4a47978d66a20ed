"""The operator dashboard: a Streamlit app over the controller's HTTP API.

``client`` is the only module that speaks HTTP; ``model`` turns the API's JSON into
typed records; ``feed`` keeps the last data of one browser session; ``summary``,
``figures`` and ``door`` (rejections by reason, the penalty box) are pure (data in,
numbers or Plotly figures out), the figures sharing ``timeplot`` (what every time chart
has in common); ``views`` and ``actions`` draw them; ``app`` is the script
``streamlit run`` executes.
"""
