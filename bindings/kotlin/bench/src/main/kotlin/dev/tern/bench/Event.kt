package dev.tern.bench

import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive

/**
 * The one event every peer tracks: a realistic name (a valid Tern name, so no spaces) and 8
 * properties, strings, numbers and a boolean. Each peer gets them once, in its API's own type,
 * before timing starts: a call measures the SDK's work, not the app's building of the map.
 */
object Event {
    const val NAME = "product_added"

    val PROPERTIES: Map<String, Any> = linkedMapOf(
        "product_id" to "sku-48213-blu-42",
        "name" to "Trail Running Shoe",
        "category" to "outdoor/footwear",
        "currency" to "EUR",
        "price" to 129.99,
        "quantity" to 2,
        "position" to 7L,
        "in_stock" to true,
    )

    /** Segment's `track` takes a kotlinx JsonObject. */
    val SEGMENT_PROPERTIES: JsonObject = JsonObject(
        PROPERTIES.mapValues { (_, v) ->
            when (v) {
                is String -> JsonPrimitive(v)
                is Number -> JsonPrimitive(v)
                is Boolean -> JsonPrimitive(v)
                else -> error("unexpected property type ${v.javaClass}")
            }
        },
    )
}
