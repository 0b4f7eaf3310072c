// Values OkHttp only knows at run time, beside values certpin can resolve.
package com.example.net

import okhttp3.CertificatePinner

object Pins {
    const val API_HOST = "api.example.com"
    const val API_LEAF = "sha256/adArOhgPp1XK542znr5ECThlgeKq5oRCrecSF72KWfs="
    const val API_BACKUP = "sha256/xjFg2je3/YWZqCESIgk8DErgWQX5k4xZRC135qW9tEw="
}

fun pinner(context: Context, remotePins: List<String>): CertificatePinner {
    val builder = CertificatePinner.Builder()
    builder.add(Pins.API_HOST, Pins.API_LEAF, Pins.API_BACKUP, BuildConfig.API_PIN_NEXT)
    builder.add(BuildConfig.CDN_HOST, "sha256/J/EYF2nTDIvughXaf2vdrwj+DK8NVUnJGB0wMXfaHqo=")
    builder.add("auth.example.com", context.getString(R.string.auth_pin))
    for (pin in remotePins) {
        builder.add("login.example.com", pin)
    }
    builder.add("static.example.com", "sha256/${staticPin()}")
    return builder.build()
}
